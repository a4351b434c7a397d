//! G.711 end to end (SIP gateways speak it): a QUIC edge whose flows declare PCMU, and an RTP/UDP edge with PCMA,
//! each through the echo bot and back, scored against the source at 8 kHz.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::*;
use mediaproc_wire::RtpPacket;
use mediaproc_wire::control::Codec;
use mediaproc_wire::g711;
use serde_json::json;

/// 20 ms G.711 RTP packets (160 samples at 8 kHz, timestamps +160).
fn g711_packets(pcm: &[i16], ssrc: u32, payload_type: u8) -> Vec<Vec<u8>> {
    pcm.chunks_exact(160)
        .enumerate()
        .map(|(i, frame)| {
            let mut payload = [0u8; 160];
            if payload_type == g711::PT_PCMU {
                g711::ulaw_encode_slice(frame, &mut payload);
            } else {
                g711::alaw_encode_slice(frame, &mut payload);
            }
            let packet = RtpPacket::new(payload_type, i as u16, (i as u32) * 160, ssrc, &payload);
            let mut out = vec![0u8; packet.encoded_len()];
            packet.write(&mut out).unwrap();
            out
        })
        .collect()
}

/// Decodes received G.711 payloads in sequence order, gaps as silence.
fn decode_g711(mut packets: Vec<(u16, Vec<u8>)>, payload_type: u8) -> Vec<i16> {
    let Some(first) = packets.first().map(|p| p.0) else {
        return Vec::new();
    };
    packets.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
    let mut out = Vec::new();
    let mut expected = first;
    for (seq, payload) in &packets {
        while expected != *seq && seq.wrapping_sub(expected) < 1000 {
            out.extend_from_slice(&[0i16; 160]);
            expected = expected.wrapping_add(1);
        }
        let mut frame = [0i16; 160];
        if payload_type == g711::PT_PCMU {
            g711::ulaw_decode_slice(payload, &mut frame);
        } else {
            g711::alaw_decode_slice(payload, &mut frame);
        }
        out.extend_from_slice(&frame[..payload.len().min(160)]);
        expected = seq.wrapping_add(1);
    }
    out
}

/// Two generations of G.711 with the daemon's 8 ⇄ 16 kHz resampling cost little (measured 0.988 on both edges); the
/// margin absorbs the playout's time-scaling on a loaded machine. Lost or misordered frames would score far lower.
const MIN_WINDOWED_CORRELATION: f64 = 0.9;

/// How far the playout may move its delay during the test (±40 ms at 8 kHz): the test's sender runs on the same 2
/// cores as the daemon, and when it is starved its packets bunch and the playout re-steers, once, in quiet audio.
const MAX_PLAYOUT_SHIFT: usize = 320;

/// Scores what came back against the source, warp-aware, and says where the lag moved.
fn score(what: &str, source: &[i16], received: &[i16]) {
    let (_, lag) = best_correlation(source, received, 8_000);
    let (windowed, lags) = warp_aware_correlation(source, received, lag, MAX_PLAYOUT_SHIFT);
    let lags_ms: Vec<String> = lags
        .iter()
        .map(|l| format!("{:.0}", *l as f64 / 8.0))
        .collect();
    println!(
        "{what}: {} samples back, windowed correlation {windowed:.3} around {:.1} ms (per 200 ms: {} ms)",
        received.len(),
        lag as f64 / 8.0,
        lags_ms.join(" ")
    );
    assert!(
        windowed > MIN_WINDOWED_CORRELATION,
        "{what}: windowed correlation {windowed:.3}, lags per window {lags_ms:?} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_edge_with_pcmu_flows_gets_audio_both_ways() {
    let _serial = serial().await;
    let dir = temp_dir("g711-quic");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;
    let edge = connect_edge_with(&daemon, &session, g711::PT_PCMU, Codec::Pcmu)
        .await
        .unwrap();
    let source = speech(8_000 * 3, 8_000);
    let packets = g711_packets(&source, 0x0711, g711::PT_PCMU);
    let start = tokio::time::Instant::now();
    let mut received = Vec::new();
    let total = Duration::from_millis(20) * packets.len() as u32 + Duration::from_millis(600);
    let mut next = 0usize;
    while start.elapsed() < total {
        while next < packets.len() && Duration::from_millis(20) * next as u32 <= start.elapsed() {
            edge.conn.send_packet(RENDER_FLOW, &packets[next]).unwrap();
            next += 1;
        }
        let deadline = (start + Duration::from_millis(20) * (next as u32)).min(start + total);
        if let Ok(Ok((flow, bytes))) =
            tokio::time::timeout_at(deadline, edge.conn.recv_packet()).await
        {
            if flow == SOURCE_FLOW {
                let rtp = RtpPacket::parse(&bytes).unwrap();
                assert_eq!(
                    rtp.payload_type,
                    g711::PT_PCMU,
                    "the echo is PCMU, as declared"
                );
                assert_eq!(rtp.payload.len(), 160);
                received.push((rtp.sequence, rtp.payload.to_vec()));
            }
        }
    }
    let received = decode_g711(received, g711::PT_PCMU);
    score("PCMU over QUIC", &source, &received);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtp_udp_edge_with_pcma_gets_audio_both_ways() {
    let _serial = serial().await;
    let dir = temp_dir("g711-udp");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo", "rtp": {"codec": "pcma"}})).await;
    let rtp_local: std::net::SocketAddr =
        session["rtp"]["local"].as_str().unwrap().parse().unwrap();
    let far = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let source = speech(8_000 * 3, 8_000);
    let packets = g711_packets(&source, 0x0712, g711::PT_PCMA);
    let start = tokio::time::Instant::now();
    let total = Duration::from_millis(20) * packets.len() as u32 + Duration::from_millis(600);
    let mut received = Vec::new();
    let mut next = 0usize;
    let mut buf = [0u8; 1500];
    while start.elapsed() < total {
        while next < packets.len() && Duration::from_millis(20) * next as u32 <= start.elapsed() {
            far.send_to(&packets[next], rtp_local).await.unwrap();
            next += 1;
        }
        let deadline = (start + Duration::from_millis(20) * (next as u32)).min(start + total);
        if let Ok(Ok((len, _))) = tokio::time::timeout_at(deadline, far.recv_from(&mut buf)).await {
            if let Ok(rtp) = RtpPacket::parse(&buf[..len]) {
                if rtp.payload_type == g711::PT_PCMA {
                    assert_eq!(rtp.payload.len(), 160);
                    received.push((rtp.sequence, rtp.payload.to_vec()));
                }
            }
        }
    }
    let received = decode_g711(received, g711::PT_PCMA);
    score("PCMA over RTP/UDP", &source, &received);
    daemon.shutdown().await;
}
