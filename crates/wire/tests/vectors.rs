//! Test vectors of `proto/vectors/v1.txt`, checked both ways: each value encodes to exactly the vector's
//! bytes, and the vector's bytes decode to exactly the value. The spec (`proto/SPEC.md`) must show every
//! vector verbatim. Regenerate the file after a deliberate format change with `MEDIAPROC_BLESS=1`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mediaproc_wire::control::{
    Codec, ControlMessage, Decoded, Direction, FlowDecl, MediaKind, NO_MSI, Participant,
    decode_frame, error_code,
};
use mediaproc_wire::rtcp::{self, ReportBlock, RtcpPacket, SenderInfo};
use mediaproc_wire::rtp::{
    AudioLevel, ExtensionElement, ExtensionForm, HeaderExtension, TelephoneEvent,
};
use mediaproc_wire::{RoqDatagram, RtpPacket};
use uuid::Uuid;

const SESSION: Uuid = Uuid::from_u128(0x2379cf46_1d4b_4f4b_a8d6_0c3f2e6b9a11);
const RENDER_CTX: Uuid = Uuid::from_u128(0x14778cc4_3f2a_4a59_9b1e_7d0c1a2b3c4d);
const SOURCE_CTX: Uuid = Uuid::from_u128(0xa5dcfc9b_8e7d_4c6b_a5f4_e3d2c1b0a998);

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn flow_render() -> FlowDecl {
    FlowDecl {
        flow_id: 0,
        direction: Direction::Render,
        media: MediaKind::Audio,
        context: RENDER_CTX,
        msi: NO_MSI,
        payload_type: 111,
        codec: Codec::Opus,
    }
}

fn flow_source() -> FlowDecl {
    FlowDecl {
        flow_id: 1,
        direction: Direction::Source,
        media: MediaKind::Audio,
        context: SOURCE_CTX,
        msi: NO_MSI,
        payload_type: 111,
        codec: Codec::Opus,
    }
}

fn control_vectors() -> Vec<(&'static str, ControlMessage)> {
    vec![
        (
            "control.attach",
            ControlMessage::Attach {
                session_id: SESSION,
                token: b"s3cr3t-edge-token".to_vec(),
                flows: vec![flow_render(), flow_source()],
            },
        ),
        (
            "control.attach_ok",
            ControlMessage::AttachOk {
                session_id: SESSION,
            },
        ),
        (
            "control.detach",
            ControlMessage::Detach {
                session_id: SESSION,
                reason: error_code::NORMAL,
            },
        ),
        (
            "control.open_flow",
            ControlMessage::OpenFlow {
                session_id: SESSION,
                flow: FlowDecl {
                    flow_id: 300,
                    msi: 4242,
                    ..flow_render()
                },
            },
        ),
        (
            "control.close_flow",
            ControlMessage::CloseFlow {
                session_id: SESSION,
                flow_id: 300,
            },
        ),
        (
            "control.roster",
            ControlMessage::Roster {
                session_id: SESSION,
                participants: vec![
                    Participant {
                        id: "alice".into(),
                        msi: 4242,
                        muted: false,
                    },
                    Participant {
                        id: "bob".into(),
                        msi: 4243,
                        muted: true,
                    },
                ],
            },
        ),
        (
            "control.dominant_speaker",
            ControlMessage::DominantSpeaker {
                session_id: SESSION,
                msi: 4242,
            },
        ),
        (
            "control.dtmf",
            ControlMessage::Dtmf {
                session_id: SESSION,
                event: 11,
                duration_ms: 160,
            },
        ),
        (
            "control.send_status",
            ControlMessage::SendStatus {
                session_id: SESSION,
                context: SOURCE_CTX,
                active: true,
            },
        ),
        (
            "control.keep_alive",
            ControlMessage::KeepAlive {
                nonce: 0x0102030405060708,
            },
        ),
        (
            "control.keep_alive_ack",
            ControlMessage::KeepAliveAck {
                nonce: 0x0102030405060708,
            },
        ),
        (
            "control.error",
            ControlMessage::Error {
                code: error_code::ATTACH_REFUSED,
                session_id: SESSION,
                message: "attach refused".into(),
            },
        ),
    ]
}

/// Media vectors: (name, bytes produced by the writer, checker that parses and compares).
type MediaVector = (&'static str, Vec<u8>, fn(&[u8]));

fn opus_payload() -> &'static [u8] {
    // A real 20 ms Opus SILK packet would do; these bytes stand for one (TOC 0x78 = SILK WB 20 ms).
    &[0x78, 0x01, 0x02, 0x03]
}

fn rtp_opus_level() -> Vec<u8> {
    let mut ext = [0u8; 8];
    let level = AudioLevel {
        voice: true,
        level: 30,
    }
    .to_byte();
    let n = mediaproc_wire::rtp::write_extension_elements(
        ExtensionForm::OneByte,
        &[ExtensionElement {
            id: 1,
            data: &[level],
        }],
        &mut ext,
    )
    .unwrap();
    let p = RtpPacket {
        marker: false,
        extension: Some(HeaderExtension {
            profile: ExtensionForm::OneByte.profile(),
            data: &ext[..n],
        }),
        ..RtpPacket::new(111, 1000, 960_000, 0x1122_3344, opus_payload())
    };
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

fn check_rtp_opus_level(b: &[u8]) {
    let p = RtpPacket::parse(b).unwrap();
    assert_eq!(
        (p.payload_type, p.sequence, p.timestamp, p.ssrc),
        (111, 1000, 960_000, 0x1122_3344)
    );
    assert_eq!(p.payload, opus_payload());
    let ext = p.extension.unwrap();
    assert_eq!(ext.form(), Some(ExtensionForm::OneByte));
    let level = AudioLevel::parse(ext.find(1).unwrap()).unwrap();
    assert_eq!(
        level,
        AudioLevel {
            voice: true,
            level: 30
        }
    );
}

fn rtp_two_byte_ext() -> Vec<u8> {
    let mut ext = [0u8; 12];
    let n = mediaproc_wire::rtp::write_extension_elements(
        ExtensionForm::TwoByte,
        &[
            ExtensionElement {
                id: 1,
                data: &[0x9e],
            },
            ExtensionElement { id: 20, data: &[] },
        ],
        &mut ext,
    )
    .unwrap();
    let p = RtpPacket {
        marker: true,
        extension: Some(HeaderExtension {
            profile: ExtensionForm::TwoByte.profile(),
            data: &ext[..n],
        }),
        ..RtpPacket::new(111, 1, 960, 0x1122_3344, opus_payload())
    };
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

fn check_rtp_two_byte_ext(b: &[u8]) {
    let p = RtpPacket::parse(b).unwrap();
    assert!(p.marker);
    let ext = p.extension.unwrap();
    assert_eq!(ext.form(), Some(ExtensionForm::TwoByte));
    let elems: Vec<_> = ext.elements().map(|e| e.unwrap()).collect();
    assert_eq!(elems.len(), 2);
    assert_eq!((elems[0].id, elems[0].data), (1, &[0x9e][..]));
    assert_eq!((elems[1].id, elems[1].data.len()), (20, 0));
}

fn rtp_dtmf() -> Vec<u8> {
    let mut ev = [0u8; 4];
    TelephoneEvent {
        event: 5,
        end: true,
        volume: 10,
        duration: 1280,
    }
    .write(&mut ev)
    .unwrap();
    let p = RtpPacket::new(101, 2000, 48_000, 0x1122_3344, &ev);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

fn check_rtp_dtmf(b: &[u8]) {
    let p = RtpPacket::parse(b).unwrap();
    assert_eq!(p.payload_type, 101);
    let ev = TelephoneEvent::parse(p.payload).unwrap();
    assert_eq!(ev.dtmf_char(), Some('5'));
    assert!(ev.end);
    assert_eq!((ev.volume, ev.duration), (10, 1280));
}

fn roq_flow0() -> Vec<u8> {
    let rtp = RtpPacket::new(111, 7, 6720, 0xdead_beef, opus_payload());
    let mut pkt = vec![0u8; rtp.encoded_len()];
    rtp.write(&mut pkt).unwrap();
    let d = RoqDatagram {
        flow_id: 0,
        packet: &pkt,
    };
    let mut out = vec![0u8; d.encoded_len()];
    d.write(&mut out).unwrap();
    out
}

fn check_roq_flow0(b: &[u8]) {
    let d = RoqDatagram::parse(b).unwrap();
    assert_eq!(d.flow_id, 0);
    assert!(!mediaproc_wire::roq::is_rtcp(d.packet));
    let p = RtpPacket::parse(d.packet).unwrap();
    assert_eq!((p.sequence, p.timestamp, p.ssrc), (7, 6720, 0xdead_beef));
}

fn roq_flow300_rtcp() -> Vec<u8> {
    let mut pkt = [0u8; 64];
    let n = rtcp::write_receiver_report(0x5555_6666, &[], &mut pkt).unwrap();
    let d = RoqDatagram {
        flow_id: 300,
        packet: &pkt[..n],
    };
    let mut out = vec![0u8; d.encoded_len()];
    d.write(&mut out).unwrap();
    out
}

fn check_roq_flow300_rtcp(b: &[u8]) {
    let d = RoqDatagram::parse(b).unwrap();
    assert_eq!(d.flow_id, 300);
    assert!(mediaproc_wire::roq::is_rtcp(d.packet));
    let pkts: Vec<_> = rtcp::parse_compound(d.packet).map(|p| p.unwrap()).collect();
    assert!(
        matches!(pkts[..], [RtcpPacket::ReceiverReport(rr)] if rr.ssrc == 0x5555_6666 && rr.reports.is_empty())
    );
}

fn block() -> ReportBlock {
    ReportBlock {
        ssrc: 0xdead_beef,
        fraction_lost: 25,
        cumulative_lost: 3,
        highest_sequence: 0x0001_0010,
        jitter: 120,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 0x0000_8000,
    }
}

fn rtcp_sr_sdes() -> Vec<u8> {
    let mut out = vec![0u8; 128];
    let info = SenderInfo {
        ntp_timestamp: 0xe8d4_a510_8000_0000,
        rtp_timestamp: 960_000,
        packet_count: 50,
        octet_count: 4000,
    };
    let n = rtcp::write_sender_report(0x1122_3344, &info, &[block()], &mut out).unwrap();
    let m = rtcp::write_sdes_cname(0x1122_3344, b"mp@example", &mut out[n..]).unwrap();
    out.truncate(n + m);
    out
}

fn check_rtcp_sr_sdes(b: &[u8]) {
    let pkts: Vec<_> = rtcp::parse_compound(b).map(|p| p.unwrap()).collect();
    assert_eq!(pkts.len(), 2);
    let RtcpPacket::SenderReport(sr) = pkts[0] else {
        panic!("not an SR")
    };
    assert_eq!(sr.ssrc, 0x1122_3344);
    assert_eq!(sr.info.packet_count, 50);
    assert_eq!(sr.reports.iter().collect::<Vec<_>>(), vec![block()]);
    let RtcpPacket::SourceDescription(sdes) = pkts[1] else {
        panic!("not an SDES")
    };
    let chunk = sdes.chunks().next().unwrap().unwrap();
    assert_eq!(
        (chunk.ssrc, chunk.cname()),
        (0x1122_3344, Some(&b"mp@example"[..]))
    );
}

fn rtcp_rr() -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n = rtcp::write_receiver_report(0x5555_6666, &[block()], &mut out).unwrap();
    out.truncate(n);
    out
}

fn check_rtcp_rr(b: &[u8]) {
    let pkts: Vec<_> = rtcp::parse_compound(b).map(|p| p.unwrap()).collect();
    let RtcpPacket::ReceiverReport(rr) = pkts[0] else {
        panic!("not an RR")
    };
    assert_eq!(rr.reports.iter().collect::<Vec<_>>(), vec![block()]);
}

fn rtcp_bye() -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n = rtcp::write_bye(&[0x1122_3344], Some(b"detach"), &mut out).unwrap();
    out.truncate(n);
    out
}

fn check_rtcp_bye(b: &[u8]) {
    let pkts: Vec<_> = rtcp::parse_compound(b).map(|p| p.unwrap()).collect();
    let RtcpPacket::Goodbye(bye) = pkts[0] else {
        panic!("not a BYE")
    };
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![0x1122_3344]);
    assert_eq!(bye.reason, Some(&b"detach"[..]));
}

fn media_vectors() -> Vec<MediaVector> {
    vec![
        (
            "rtp.opus_audio_level",
            rtp_opus_level(),
            check_rtp_opus_level,
        ),
        (
            "rtp.two_byte_extension",
            rtp_two_byte_ext(),
            check_rtp_two_byte_ext,
        ),
        ("rtp.dtmf_event", rtp_dtmf(), check_rtp_dtmf),
        ("roq.flow0_rtp", roq_flow0(), check_roq_flow0),
        (
            "roq.flow300_rtcp",
            roq_flow300_rtcp(),
            check_roq_flow300_rtcp,
        ),
        ("rtcp.sr_sdes", rtcp_sr_sdes(), check_rtcp_sr_sdes),
        ("rtcp.rr", rtcp_rr(), check_rtcp_rr),
        ("rtcp.bye", rtcp_bye(), check_rtcp_bye),
    ]
}

fn all_encoded() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, msg) in control_vectors() {
        let mut buf = vec![0u8; 9000];
        let n = msg.encode(&mut buf).unwrap();
        buf.truncate(n);
        out.push((name, buf));
    }
    // Unknown types: a mandatory one (answered with UNKNOWN_MESSAGE) and an ignorable one (skipped).
    out.push((
        "control.unknown_mandatory",
        vec![0x01, 0x7f, 0x00, 0x02, 0xab, 0xcd],
    ));
    out.push(("control.unknown_ignorable", vec![0x01, 0x80, 0x00, 0x00]));
    for (name, bytes, _) in media_vectors() {
        out.push((name, bytes));
    }
    out
}

fn load() -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(proto_dir().join("vectors/v1.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hex) = l.split_once('=').unwrap();
            (name.trim().to_owned(), unhex(hex))
        })
        .collect()
}

#[test]
fn vectors_file_matches_encoders() {
    let encoded = all_encoded();
    if std::env::var_os("MEDIAPROC_BLESS").is_some() {
        let mut text = String::from(
            "# mediaproc protocol v1 test vectors: name = hex bytes. Checked both ways by crates/wire/tests/vectors.rs.\n",
        );
        for (name, bytes) in &encoded {
            text.push_str(&format!("{name} = {}\n", hex(bytes)));
        }
        std::fs::write(proto_dir().join("vectors/v1.txt"), text).unwrap();
    }
    let file = load();
    assert_eq!(file.len(), encoded.len(), "vector count differs");
    for (name, bytes) in &encoded {
        assert_eq!(
            hex(&file[*name]),
            hex(bytes),
            "encoding of {name} differs from the vector"
        );
    }
}

#[test]
fn vectors_decode_to_values() {
    let file = load();
    for (name, msg) in control_vectors() {
        let bytes = &file[name];
        assert_eq!(
            decode_frame(bytes).unwrap(),
            Decoded::Message(msg, bytes.len()),
            "{name}"
        );
    }
    assert_eq!(
        decode_frame(&file["control.unknown_mandatory"]).unwrap(),
        Decoded::Unknown {
            msg_type: 0x7f,
            len: 6
        }
    );
    assert_eq!(
        decode_frame(&file["control.unknown_ignorable"]).unwrap(),
        Decoded::Unknown {
            msg_type: 0x80,
            len: 4
        }
    );
    for (name, _, check) in media_vectors() {
        check(&file[name]);
    }
}

#[test]
fn spec_shows_every_vector() {
    let spec = std::fs::read_to_string(proto_dir().join("SPEC.md")).unwrap();
    for (name, bytes) in load() {
        let line = format!("{name} = {}", hex(&bytes));
        assert!(
            spec.contains(&line),
            "proto/SPEC.md lacks the vector line `{line}`"
        );
    }
}
