//! Property tests: round trips for any valid value, and any byte string parses to a value or an error.
#![allow(clippy::unwrap_used)]

use mediaproc_wire::control::{
    Codec, ControlMessage, Decoded, Direction, FlowDecl, MediaKind, Participant, decode_frame,
};
use mediaproc_wire::g711;
use mediaproc_wire::rtcp::{self, ReportBlock, RtcpPacket, SenderInfo};
use mediaproc_wire::rtp::{
    Csrcs, ExtensionElement, ExtensionForm, HeaderExtension, TelephoneEvent,
    write_extension_elements,
};
use mediaproc_wire::stats::ReceiveStats;
use mediaproc_wire::{RoqDatagram, RtpPacket, roq};
use proptest::prelude::*;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn flow() -> impl Strategy<Value = FlowDecl> {
    (
        0..=roq::VARINT_MAX,
        prop_oneof![Just(Direction::Render), Just(Direction::Source)],
        prop_oneof![
            Just(MediaKind::Audio),
            Just(MediaKind::Video),
            Just(MediaKind::Data)
        ],
        uuid(),
        any::<u32>(),
        0u8..128,
        prop_oneof![
            Just(Codec::Opaque),
            Just(Codec::Opus),
            Just(Codec::Pcmu),
            Just(Codec::Pcma)
        ],
    )
        .prop_map(
            |(flow_id, direction, media, context, msi, payload_type, codec)| FlowDecl {
                flow_id,
                direction,
                media,
                context,
                msi,
                payload_type,
                codec,
            },
        )
}

fn control() -> impl Strategy<Value = ControlMessage> {
    let participant = ("[a-z0-9-]{0,64}", any::<u32>(), any::<bool>())
        .prop_map(|(id, msi, muted)| Participant { id, msi, muted });
    prop_oneof![
        (
            uuid(),
            prop::collection::vec(any::<u8>(), 1..=64),
            prop::collection::vec(flow(), 0..=32)
        )
            .prop_map(|(session_id, token, flows)| ControlMessage::Attach {
                session_id,
                token,
                flows
            }),
        uuid().prop_map(|session_id| ControlMessage::AttachOk { session_id }),
        (uuid(), any::<u16>())
            .prop_map(|(session_id, reason)| ControlMessage::Detach { session_id, reason }),
        (uuid(), flow())
            .prop_map(|(session_id, flow)| ControlMessage::OpenFlow { session_id, flow }),
        (uuid(), 0..=roq::VARINT_MAX).prop_map(|(session_id, flow_id)| ControlMessage::CloseFlow {
            session_id,
            flow_id
        }),
        (uuid(), prop::collection::vec(participant, 0..=100)).prop_map(
            |(session_id, participants)| ControlMessage::Roster {
                session_id,
                participants
            }
        ),
        (uuid(), any::<u32>())
            .prop_map(|(session_id, msi)| ControlMessage::DominantSpeaker { session_id, msi }),
        (uuid(), 0u8..16, any::<u16>()).prop_map(|(session_id, event, duration_ms)| {
            ControlMessage::Dtmf {
                session_id,
                event,
                duration_ms,
            }
        }),
        (uuid(), uuid(), any::<bool>()).prop_map(|(session_id, context, active)| {
            ControlMessage::SendStatus {
                session_id,
                context,
                active,
            }
        }),
        any::<u64>().prop_map(|nonce| ControlMessage::KeepAlive { nonce }),
        any::<u64>().prop_map(|nonce| ControlMessage::KeepAliveAck { nonce }),
        (any::<u16>(), uuid(), "\\PC{0,60}").prop_map(|(code, session_id, message)| {
            ControlMessage::Error {
                code,
                session_id,
                message,
            }
        }),
    ]
}

fn block() -> impl Strategy<Value = ReportBlock> {
    (
        any::<u32>(),
        any::<u8>(),
        -(1i32 << 23)..(1 << 23),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                ssrc,
                fraction_lost,
                cumulative_lost,
                highest_sequence,
                jitter,
                last_sr,
                delay_since_last_sr,
            )| {
                ReportBlock {
                    ssrc,
                    fraction_lost,
                    cumulative_lost,
                    highest_sequence,
                    jitter,
                    last_sr,
                    delay_since_last_sr,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn control_round_trip(msg in control()) {
        let mut buf = vec![0u8; 9000];
        let n = msg.encode(&mut buf).unwrap();
        prop_assert_eq!(decode_frame(&buf[..n]).unwrap(), Decoded::Message(msg.clone(), n));
        // Every strict prefix is incomplete, never an error or a wrong message.
        for cut in [0, 1, 3, n / 2, n - 1] {
            let d = decode_frame(&buf[..cut]).unwrap();
            prop_assert!(
                matches!(d, Decoded::Incomplete { .. }),
                "prefix {} of {} decoded as {:?}",
                cut,
                n,
                d
            );
        }
        // A buffer one byte short is refused, not overrun.
        prop_assert!(msg.encode(&mut buf[..n - 1]).is_err());
    }

    #[test]
    fn control_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_frame(&bytes);
        // Force a valid header so that bodies are exercised too.
        let mut framed = vec![1u8, bytes.first().copied().unwrap_or(1) % 16, 0, 0];
        let len = bytes.len().min(8192) as u16;
        framed[2..4].copy_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes[..usize::from(len)]);
        let _ = decode_frame(&framed);
    }

    #[test]
    fn rtp_round_trip(
        marker in any::<bool>(),
        pt in 0u8..128,
        seq in any::<u16>(),
        ts in any::<u32>(),
        ssrc in any::<u32>(),
        csrc_n in 0usize..=15,
        csrc_seed in any::<u8>(),
        ext in prop::option::of((any::<u16>(), prop::collection::vec(any::<u8>(), 0..16).prop_map(|v| {
            let mut v = v; v.truncate(v.len() / 4 * 4); v
        }))),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        padding in any::<u8>(),
    ) {
        let csrc_bytes: Vec<u8> = (0..csrc_n * 4).map(|i| csrc_seed.wrapping_add(i as u8)).collect();
        let p = RtpPacket {
            marker,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc,
            csrc: Csrcs::from_bytes(&csrc_bytes).unwrap(),
            extension: ext.as_ref().map(|(profile, data)| HeaderExtension { profile: *profile, data }),
            payload: &payload,
            padding,
        };
        let mut buf = vec![0u8; p.encoded_len()];
        let n = p.write(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(RtpPacket::parse(&buf).unwrap(), p);
        prop_assert!(p.write(&mut buf[..n - 1]).is_err());
    }

    #[test]
    fn rtp_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = RtpPacket::parse(&bytes) {
            // What parses re-serializes to something that parses to the same value.
            let mut buf = vec![0u8; p.encoded_len()];
            p.write(&mut buf).unwrap();
            prop_assert_eq!(RtpPacket::parse(&buf).unwrap(), p);
            if let Some(ext) = p.extension {
                for e in ext.elements() { let _ = e; }
            }
        }
    }

    #[test]
    fn extension_elements_round_trip(
        two_byte in any::<bool>(),
        elems in prop::collection::vec((1u8..=14, prop::collection::vec(any::<u8>(), 1..=16)), 0..6),
    ) {
        let form = if two_byte { ExtensionForm::TwoByte } else { ExtensionForm::OneByte };
        let elements: Vec<_> = elems.iter().map(|(id, d)| ExtensionElement { id: *id, data: d }).collect();
        let mut buf = [0u8; 256];
        let n = write_extension_elements(form, &elements, &mut buf).unwrap();
        prop_assert_eq!(n % 4, 0);
        let ext = HeaderExtension { profile: form.profile(), data: &buf[..n] };
        let back: Vec<_> = ext.elements().map(|e| e.unwrap()).collect();
        prop_assert_eq!(back, elements);
    }

    #[test]
    fn rtcp_reports_round_trip(ssrc in any::<u32>(), ntp in any::<u64>(), rtp_ts in any::<u32>(),
                               blocks in prop::collection::vec(block(), 0..=31), sr in any::<bool>()) {
        let mut buf = vec![0u8; 1024];
        let info = SenderInfo { ntp_timestamp: ntp, rtp_timestamp: rtp_ts, packet_count: 1, octet_count: 2 };
        let n = if sr {
            rtcp::write_sender_report(ssrc, &info, &blocks, &mut buf).unwrap()
        } else {
            rtcp::write_receiver_report(ssrc, &blocks, &mut buf).unwrap()
        };
        let pkts: Vec<_> = rtcp::parse_compound(&buf[..n]).map(|p| p.unwrap()).collect();
        prop_assert_eq!(pkts.len(), 1);
        match pkts[0] {
            RtcpPacket::SenderReport(p) => {
                prop_assert!(sr);
                prop_assert_eq!(p.ssrc, ssrc);
                prop_assert_eq!(p.info, info);
                prop_assert_eq!(p.reports.iter().collect::<Vec<_>>(), blocks);
            }
            RtcpPacket::ReceiverReport(p) => {
                prop_assert!(!sr);
                prop_assert_eq!(p.ssrc, ssrc);
                prop_assert_eq!(p.reports.iter().collect::<Vec<_>>(), blocks);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn rtcp_sdes_bye_round_trip(ssrc in any::<u32>(), cname in prop::collection::vec(any::<u8>(), 1..=255),
                                reason in prop::option::of(prop::collection::vec(any::<u8>(), 0..=255))) {
        let mut buf = vec![0u8; 1200];
        let n = rtcp::write_sdes_cname(ssrc, &cname, &mut buf).unwrap();
        let m = rtcp::write_bye(&[ssrc], reason.as_deref(), &mut buf[n..]).unwrap();
        let pkts: Vec<_> = rtcp::parse_compound(&buf[..n + m]).map(|p| p.unwrap()).collect();
        let RtcpPacket::SourceDescription(sdes) = pkts[0] else { panic!("no SDES") };
        let chunk = sdes.chunks().next().unwrap().unwrap();
        prop_assert_eq!(chunk.ssrc, ssrc);
        prop_assert_eq!(chunk.cname(), Some(&cname[..]));
        let RtcpPacket::Goodbye(bye) = pkts[1] else { panic!("no BYE") };
        prop_assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![ssrc]);
        prop_assert_eq!(bye.reason, reason.as_deref());
    }

    #[test]
    fn rtcp_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for p in rtcp::parse_compound(&bytes) {
            if let Ok(RtcpPacket::SourceDescription(s)) = p {
                for c in s.chunks().flatten() {
                    let _ = c.items().count();
                }
            }
        }
    }

    #[test]
    fn varint_round_trip(v in 0..=roq::VARINT_MAX) {
        let mut buf = [0u8; 8];
        let n = roq::encode_varint(v, &mut buf).unwrap();
        prop_assert_eq!(Some(n), roq::varint_len(v));
        prop_assert_eq!(roq::decode_varint(&buf[..n]).unwrap(), (v, n));
        prop_assert!(roq::decode_varint(&buf[..n - 1]).is_err());
    }

    #[test]
    fn roq_round_trip(flow_id in 0..=roq::VARINT_MAX, packet in prop::collection::vec(any::<u8>(), 1..300)) {
        let d = RoqDatagram { flow_id, packet: &packet };
        let mut buf = vec![0u8; d.encoded_len()];
        let n = d.write(&mut buf).unwrap();
        prop_assert_eq!(RoqDatagram::parse(&buf[..n]).unwrap(), d);
    }

    #[test]
    fn roq_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(d) = RoqDatagram::parse(&bytes) {
            prop_assert!(!d.packet.is_empty());
            prop_assert_eq!(d.encoded_len() <= bytes.len(), true);
        }
    }

    #[test]
    fn telephone_event_round_trip(event in any::<u8>(), end in any::<bool>(), volume in 0u8..64, duration in any::<u16>()) {
        let e = TelephoneEvent { event, end, volume, duration };
        let mut b = [0u8; 4];
        e.write(&mut b).unwrap();
        prop_assert_eq!(TelephoneEvent::parse(&b).unwrap(), e);
    }
}

#[test]
fn g711_is_stable_and_close() {
    for b in 0..=255u8 {
        let s = g711::ulaw_decode(b);
        assert_eq!(
            g711::ulaw_decode(g711::ulaw_encode(s)),
            s,
            "ulaw byte {b:#x}"
        );
        let s = g711::alaw_decode(b);
        assert_eq!(
            g711::alaw_decode(g711::alaw_encode(s)),
            s,
            "alaw byte {b:#x}"
        );
    }
    for s in (i16::MIN..=i16::MAX).step_by(7) {
        let tol = (i32::from(s).abs() / 16).max(16) + 8;
        let u = i32::from(g711::ulaw_decode(g711::ulaw_encode(s)));
        assert!((u - i32::from(s)).abs() <= tol, "ulaw {s} -> {u}");
        let a = i32::from(g711::alaw_decode(g711::alaw_encode(s)));
        assert!((a - i32::from(s)).abs() <= tol, "alaw {s} -> {a}");
    }
    // Known values from ITU-T G.711: silence encodes as 0xFF (µ-law) and 0xD5 (A-law).
    assert_eq!(g711::ulaw_encode(0), 0xFF);
    assert_eq!(g711::alaw_encode(0), 0xD5);
}

#[test]
fn receive_stats_count_loss_and_jitter() {
    let mut s = ReceiveStats::default();
    // 100 packets, 20 ms apart at 48 kHz, with 5 missing and arrival jitter of ±2 ms alternating.
    for i in 0u16..100 {
        if [10, 11, 50, 70, 99].contains(&i) {
            continue;
        }
        let seq = 65_500u16.wrapping_add(i); // crosses the wrap
        let ts = u32::from(i) * 960;
        let arrival = ts + if i % 2 == 0 { 96 } else { 0 };
        s.on_packet(seq, ts, arrival);
    }
    assert_eq!(s.received(), 95);
    assert_eq!(s.expected(), 99); // the last one (99) never arrived, so the highest is 98
    assert_eq!(s.lost(), 4);
    assert!(s.extended_max() > 65_535);
    assert!((60..=100).contains(&s.jitter()), "jitter {}", s.jitter());
    let rb = s.report_block(1, 0, 0);
    assert_eq!(rb.cumulative_lost, 4);
    assert_eq!(rb.fraction_lost, (4 * 256 / 99) as u8);
}

#[test]
fn rtt_from_report_block() {
    let b = ReportBlock {
        last_sr: 0x0001_0000,
        delay_since_last_sr: 0x0000_8000,
        ..ReportBlock::default()
    };
    // Arrived 1.75 s after the SR's middle-32 time, held 0.5 s: RTT 1.25 s.
    assert_eq!(rtcp::round_trip_time(&b, 0x0002_C000), Some(0x0001_4000));
    assert_eq!(rtcp::round_trip_time(&ReportBlock::default(), 5), None);
}

#[test]
fn errors_name_field_and_offset() {
    let e = RtpPacket::parse(&[0x80, 0x6f, 0, 1, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("timestamp") && e.contains("byte 4"), "{e}");
    let e = decode_frame(&[1, 1, 0, 3, 0, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("session_id") && e.contains("byte 4"), "{e}");
    let e = decode_frame(&[2, 1, 0, 0]).unwrap_err().to_string();
    assert!(e.contains("version 2"), "{e}");
    let e = decode_frame(&[1, 1, 0xff, 0xff]).unwrap_err().to_string();
    assert!(e.contains("8192"), "{e}");
}

/// Feeds `n` packets 20 ms apart at 48 kHz whose arrival delay varies by `delays`, with the RTP timestamp and
/// the arrival clock starting at the given (possibly wrapping) bases; returns the jitter.
fn jitter_with_bases(ts_base: u32, arrival_base: u32, seq_base: u16, delays: &[u16]) -> u32 {
    let mut s = ReceiveStats::default();
    for (i, d) in delays.iter().enumerate() {
        let ts = ts_base.wrapping_add(i as u32 * 960);
        let arrival = arrival_base
            .wrapping_add(i as u32 * 960)
            .wrapping_add(u32::from(*d));
        s.on_packet(seq_base.wrapping_add(i as u16), ts, arrival);
    }
    s.jitter()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Jitter depends only on the variation of the transit time: the same stream gives the same jitter
    /// wherever the RTP timestamp and arrival clocks start, including streams that cross either wrap.
    #[test]
    fn jitter_is_invariant_across_timestamp_wrap(
        ts_base in any::<u32>(),
        arrival_base in any::<u32>(),
        seq_base in any::<u16>(),
        delays in prop::collection::vec(0u16..2000, 2..80),
    ) {
        let reference = jitter_with_bases(0, 1 << 20, 0, &delays);
        prop_assert_eq!(jitter_with_bases(ts_base, arrival_base, seq_base, &delays), reference);
        // Bounded by the largest delay variation: no 2^32-sized jump ever enters the estimate.
        prop_assert!(reference <= 2000);
    }

    /// A stream with constant delay has zero jitter even when its timestamps wrap mid-stream.
    #[test]
    fn constant_delay_across_wrap_has_no_jitter(start in 0u32..(100 * 960), delay in any::<u32>()) {
        let ts_base = u32::MAX - start;
        let delays = vec![0u16; 200];
        let j = jitter_with_bases(ts_base, ts_base.wrapping_add(delay), 65_400, &delays);
        prop_assert_eq!(j, 0);
    }

    /// RTT from a report block is A − LSR − DLSR modulo 2^32: correct across the NTP middle-32 wrap.
    #[test]
    fn rtt_across_ntp_middle32_wrap(lsr in 1u32.., dlsr in 0u32..(60 * 65_536), rtt in 0u32..(600 * 65_536)) {
        let b = ReportBlock { last_sr: lsr, delay_since_last_sr: dlsr, ..ReportBlock::default() };
        let arrival = lsr.wrapping_add(dlsr).wrapping_add(rtt);
        prop_assert_eq!(rtcp::round_trip_time(&b, arrival), Some(rtt));
    }
}
