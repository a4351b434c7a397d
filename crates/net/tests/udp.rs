//! The plain RTP/UDP endpoint against a raw UDP peer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mediaproc_net::{RtpUdpConfig, RtpUdpEndpoint, UdpSession};
use mediaproc_wire::control::Codec;
use mediaproc_wire::{RtpPacket, g711, rtcp};
use tokio::net::UdpSocket;

fn pcmu_config() -> RtpUdpConfig {
    RtpUdpConfig {
        payload_type: g711::PT_PCMU,
        codec: Codec::Pcmu,
        ..RtpUdpConfig::opus("127.0.0.1:0".parse().unwrap(), 0)
    }
}

fn tone(n: usize, phase: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            ((((i + phase) as f64) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0)
                as i16
        })
        .collect()
}

async fn pop(s: &mut UdpSession) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    for _ in 0..500 {
        if let Some(m) = s.rx.pop(&mut buf) {
            return buf[..m.len].to_vec();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no packet arrived");
}

#[tokio::test]
async fn symmetric_rtp_with_g711() {
    let (ep, mut s) = RtpUdpEndpoint::bind(pcmu_config()).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Before the peer sent anything there is nowhere to send: counted, not sent.
    s.tx.push(0, 0, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
        .unwrap();
    s.waker.wake();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.stats.snapshot().tx_dropped, 1);

    // Peer → endpoint: 20 ms of µ-law.
    let pcm = tone(160, 0);
    let mut payload = [0u8; 160];
    g711::ulaw_encode_slice(&pcm, &mut payload);
    let p = RtpPacket::new(0, 1, 160, 0xabc, &payload);
    let mut pkt = vec![0u8; p.encoded_len()];
    p.write(&mut pkt).unwrap();
    peer.send_to(&pkt, ep.local_addr()).await.unwrap();
    let got = pop(&mut s).await;
    let rp = RtpPacket::parse(&got).unwrap();
    let mut decoded = [0i16; 160];
    g711::ulaw_decode_slice(rp.payload, &mut decoded);
    let err: i64 = decoded
        .iter()
        .zip(&pcm)
        .map(|(a, b)| (i64::from(*a) - i64::from(*b)).abs())
        .max()
        .unwrap();
    assert!(err < 300, "µ-law error {err}");

    // Endpoint → peer: replies go to where the packet came from.
    let p = RtpPacket::new(0, 77, 320, 0xdef, &payload);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    s.tx.push(0, 0, &out).unwrap();
    s.waker.wake();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, ep.local_addr());
    assert_eq!(RtpPacket::parse(&buf[..n]).unwrap().sequence, 77);

    // Wrong payload type, garbage and RTCP are sorted and counted, never delivered as audio.
    let wrong = RtpPacket::new(96, 2, 320, 0xabc, b"opus?");
    let mut w = vec![0u8; wrong.encoded_len()];
    wrong.write(&mut w).unwrap();
    peer.send_to(&w, ep.local_addr()).await.unwrap();
    peer.send_to(&[0x12, 0x34, 0x56], ep.local_addr())
        .await
        .unwrap();
    let mut rr = [0u8; 64];
    let n = rtcp::write_receiver_report(0xabc, &[], &mut rr).unwrap();
    peer.send_to(&rr[..n], ep.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = s.stats.snapshot();
    assert_eq!(
        (st.rx_packets, st.rx_unexpected, st.rx_malformed, st.rx_rtcp),
        (1, 1, 1, 1)
    );
    assert_eq!((st.tx_packets, st.tx_dropped), (1, 1));
    assert!(s.rx.pop(&mut buf).is_none());
}

#[tokio::test]
async fn configured_remote_and_pcma() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = RtpUdpConfig {
        remote: Some(peer.local_addr().unwrap()),
        payload_type: g711::PT_PCMA,
        codec: Codec::Pcma,
        ..pcmu_config()
    };
    let (_ep, mut s) = RtpUdpEndpoint::bind(cfg).await.unwrap();
    let pcm = tone(160, 40);
    let mut payload = [0u8; 160];
    g711::alaw_encode_slice(&pcm, &mut payload);
    for seq in 0..5u16 {
        let p = RtpPacket::new(8, seq, u32::from(seq) * 160, 1, &payload);
        let mut out = vec![0u8; p.encoded_len()];
        p.write(&mut out).unwrap();
        s.tx.push(0, 0, &out).unwrap();
    }
    s.waker.wake();
    let mut buf = [0u8; 1500];
    for seq in 0..5u16 {
        let n = tokio::time::timeout(Duration::from_secs(2), peer.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stats {:?}", s.stats.snapshot()))
            .unwrap();
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!((p.payload_type, p.sequence), (8, seq));
        let mut d = [0i16; 160];
        g711::alaw_decode_slice(p.payload, &mut d);
        let err = d
            .iter()
            .zip(&pcm)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(err < 300, "A-law error {err}");
    }
}

#[tokio::test]
async fn rtcp_reports_and_round_trip_time() {
    use mediaproc_wire::rtcp::{ReportBlock, RtcpPacket, SenderInfo};
    let cfg = RtpUdpConfig {
        rtcp_interval: Some(Duration::from_millis(100)),
        ..pcmu_config()
    };
    let (ep, mut s) = RtpUdpEndpoint::bind(cfg).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = [0xffu8; 160];
    for seq in (0..6u16).filter(|q| *q != 2) {
        let p = RtpPacket::new(0, seq, u32::from(seq) * 160, 0xabc, &payload);
        let mut pkt = vec![0u8; p.encoded_len()];
        p.write(&mut pkt).unwrap();
        peer.send_to(&pkt, ep.local_addr()).await.unwrap();
    }
    let mut sr = [0u8; 64];
    let info = SenderInfo {
        ntp_timestamp: 0x0000_1234_5678_0000,
        ..Default::default()
    };
    let n = rtcp::write_sender_report(0xabc, &info, &[], &mut sr).unwrap();
    peer.send_to(&sr[..n], ep.local_addr()).await.unwrap();
    let _ = pop(&mut s).await;
    for seq in 0..3u16 {
        let p = RtpPacket::new(0, seq, u32::from(seq) * 160, 0xdef, &payload);
        let mut out = vec![0u8; p.encoded_len()];
        p.write(&mut out).unwrap();
        s.tx.push(0, 0, &out).unwrap();
    }
    s.waker.wake();

    let mut buf = [0u8; 1500];
    let mut sr_ntp = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sr_ntp.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTCP from the endpoint"
        );
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), peer.recv(&mut buf)).await
        else {
            continue;
        };
        if !mediaproc_wire::roq::is_rtcp(&buf[..n]) {
            continue;
        }
        let pkts: Vec<_> = rtcp::parse_compound(&buf[..n])
            .map(|p| p.unwrap())
            .collect();
        let RtcpPacket::SenderReport(sr) = pkts[0] else {
            panic!("expected an SR first")
        };
        assert_eq!(
            (sr.ssrc, sr.info.packet_count, sr.info.octet_count),
            (0xdef, 3, 480)
        );
        let b = sr.reports.iter().next().unwrap();
        assert_eq!(
            (b.ssrc, b.highest_sequence, b.cumulative_lost, b.last_sr),
            (0xabc, 5, 1, 0x1234_5678)
        );
        assert!(matches!(pkts[1], RtcpPacket::SourceDescription(_)));
        sr_ntp = Some(sr.info.ntp_timestamp);
    }
    let block = ReportBlock {
        ssrc: 0xdef,
        last_sr: rtcp::ntp_middle32(sr_ntp.unwrap()),
        ..ReportBlock::default()
    };
    let mut rr = [0u8; 64];
    let n = rtcp::write_receiver_report(0xabc, &[block], &mut rr).unwrap();
    peer.send_to(&rr[..n], ep.local_addr()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.stats.snapshot().rtcp_rtt_us == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no RTT from RTCP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.stats.snapshot().rtcp_rtt_us < 2_000_000);
    assert_eq!(s.stats.snapshot().rx_rtcp, 2);
}
