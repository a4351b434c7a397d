//! End-to-end tests of the QUIC endpoint with the edge client on loopback.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use mediaproc_net::{
    EdgeConfig, EdgeConnection, MediaServer, NetError, QuicSession, ServerConfig, ServerTrust,
    SessionEvent, SessionSpec, parse_mp_uri,
};
use mediaproc_wire::RtpPacket;
use mediaproc_wire::control::{
    Codec, ControlMessage, Direction, FlowDecl, MediaKind, NO_MSI, Participant, error_code,
};
use uuid::Uuid;

const RENDER: Uuid = Uuid::from_u128(1);
const SOURCE: Uuid = Uuid::from_u128(2);

async fn server() -> MediaServer {
    MediaServer::bind(ServerConfig::development("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

fn session(server: &MediaServer) -> (QuicSession, Vec<u8>) {
    let token = mediaproc_net::generate_token().unwrap().into_bytes();
    let s = server
        .add_session(SessionSpec {
            id: Uuid::new_v4(),
            token: token.clone(),
            render_contexts: vec![RENDER],
            source_contexts: vec![SOURCE],
        })
        .unwrap();
    (s, token)
}

async fn edge(server: &MediaServer) -> EdgeConnection {
    EdgeConnection::connect(&edge_config(server, server.certificate_fingerprint()))
        .await
        .unwrap()
}

fn edge_config(server: &MediaServer, pin: [u8; 32]) -> EdgeConfig {
    let uri = server.mp_uri("127.0.0.1").unwrap();
    let (host, port) = parse_mp_uri(&uri).unwrap();
    EdgeConfig {
        server: format!("{host}:{port}").parse().unwrap(),
        server_name: "localhost".into(),
        trust: ServerTrust::PinnedSha256(pin),
        keep_alive: Duration::from_secs(5),
    }
}

fn flows(render: u64, source: u64) -> Vec<FlowDecl> {
    let f = |flow_id, direction, context| FlowDecl {
        flow_id,
        direction,
        media: MediaKind::Audio,
        context,
        msi: NO_MSI,
        payload_type: 111,
        codec: Codec::Opus,
    };
    vec![
        f(render, Direction::Render, RENDER),
        f(source, Direction::Source, SOURCE),
    ]
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let p = RtpPacket::new(111, seq, u32::from(seq) * 960, ssrc, payload);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

/// Pops everything that arrives within `wait` after the first packet, or until `want` packets.
async fn collect(s: &mut QuicSession, want: usize, wait: Duration) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1500];
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < want {
        match s.rx.pop(&mut buf) {
            Some(m) => out.push((m.flow_id, buf[..m.len].to_vec())),
            None if tokio::time::Instant::now() >= deadline => break,
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    out
}

async fn next_event(s: &mut QuicSession) -> SessionEvent {
    tokio::time::timeout(Duration::from_secs(5), s.events.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn attach_media_both_ways_and_events() {
    let server = server().await;
    let (mut s, token) = session(&server);
    let e = edge(&server).await;
    e.attach(s.id, &token, flows(0, 1)).await.unwrap();
    assert!(
        matches!(next_event(&mut s).await, SessionEvent::Attached { flows, .. } if flows.len() == 2)
    );

    // Edge → session.
    for seq in 0..20u16 {
        e.send_packet(0, &rtp(seq, 7, &[seq as u8; 40])).unwrap();
    }
    let got = collect(&mut s, 20, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 20);
    for (i, (flow, pkt)) in got.iter().enumerate() {
        assert_eq!(*flow, 0);
        let p = RtpPacket::parse(pkt).unwrap();
        assert_eq!(p.sequence, i as u16);
        assert_eq!(p.payload, &[i as u8; 40][..]);
    }

    // Session → edge, batched: push the whole tick, wake once.
    for seq in 0..10u16 {
        s.tx.push(1, 0, &rtp(seq, 9, b"bot audio")).unwrap();
    }
    s.waker.wake();
    for seq in 0..10u16 {
        let (flow, pkt) = tokio::time::timeout(Duration::from_secs(5), e.recv_packet())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(flow, 1);
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!((p.sequence, p.ssrc, p.payload), (seq, 9, &b"bot audio"[..]));
    }
    // A packet queued on a render flow id is not sent, and counted.
    s.tx.push(0, 0, &rtp(99, 9, b"x")).unwrap();
    s.waker.wake();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = s.stats.snapshot();
    assert_eq!((st.rx_packets, st.tx_packets, st.tx_dropped), (20, 10, 1));
    assert_eq!(st.lost, 0);

    // Control events reach the session.
    let roster = vec![Participant {
        id: "alice".into(),
        msi: 42,
        muted: false,
    }];
    e.send_control(&ControlMessage::Roster {
        session_id: s.id,
        participants: roster.clone(),
    })
    .await
    .unwrap();
    e.send_control(&ControlMessage::DominantSpeaker {
        session_id: s.id,
        msi: 42,
    })
    .await
    .unwrap();
    e.send_control(&ControlMessage::Dtmf {
        session_id: s.id,
        event: 11,
        duration_ms: 100,
    })
    .await
    .unwrap();
    e.send_control(&ControlMessage::SendStatus {
        session_id: s.id,
        context: SOURCE,
        active: false,
    })
    .await
    .unwrap();
    assert_eq!(next_event(&mut s).await, SessionEvent::Roster(roster));
    assert_eq!(
        next_event(&mut s).await,
        SessionEvent::DominantSpeaker { msi: 42 }
    );
    assert_eq!(
        next_event(&mut s).await,
        SessionEvent::Dtmf {
            event: 11,
            duration_ms: 100
        }
    );
    assert_eq!(
        next_event(&mut s).await,
        SessionEvent::SendStatus {
            context: SOURCE,
            active: false
        }
    );

    // A speaker joins: a new flow; its packets arrive tagged with its id.
    let mut f = flows(77, 0)[0];
    f.msi = 42;
    e.send_control(&ControlMessage::OpenFlow {
        session_id: s.id,
        flow: f,
    })
    .await
    .unwrap();
    assert_eq!(next_event(&mut s).await, SessionEvent::FlowOpened(f));
    e.send_packet(77, &rtp(1, 8, b"speaker")).unwrap();
    let got = collect(&mut s, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].0, 77);

    // Keep-alive is answered.
    e.send_control(&ControlMessage::KeepAlive { nonce: 5 })
        .await
        .unwrap();
    assert_eq!(
        e.next_control().await.unwrap(),
        ControlMessage::KeepAliveAck { nonce: 5 }
    );

    // Detach.
    e.send_control(&ControlMessage::Detach {
        session_id: s.id,
        reason: error_code::NORMAL,
    })
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut s).await,
        SessionEvent::Detached {
            reason: error_code::NORMAL
        }
    );
    assert!(server.stats().datagrams_rx >= 21);
    e.close().await;
}

#[tokio::test]
async fn wrong_token_and_unknown_session_are_refused_alike() {
    let server = server().await;
    let (s, token) = session(&server);
    let e = edge(&server).await;

    let mut bad = token.clone();
    bad[0] ^= 1;
    let wrong = e.attach(s.id, &bad, flows(0, 1)).await.unwrap_err();
    let unknown = e
        .attach(Uuid::new_v4(), &token, flows(0, 1))
        .await
        .unwrap_err();
    let (
        NetError::Peer {
            code: c1,
            message: m1,
        },
        NetError::Peer {
            code: c2,
            message: m2,
        },
    ) = (wrong, unknown)
    else {
        panic!("expected protocol errors");
    };
    assert_eq!(
        (c1, c2),
        (error_code::ATTACH_REFUSED, error_code::ATTACH_REFUSED)
    );
    assert_eq!(
        m1, m2,
        "refusals must not tell unknown sessions from wrong tokens"
    );
    assert_eq!(server.stats().refused, 2);
    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].stats.refused, 2);

    // Media for the session sent without attaching goes nowhere.
    e.send_packet(0, &rtp(1, 1, b"sneaky")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.stats.snapshot().rx_packets, 0);
    assert_eq!(server.stats().unknown_flow, 1);

    // The connection still works: the right token attaches.
    e.attach(s.id, &token, flows(0, 1)).await.unwrap();
    e.close().await;
}

#[tokio::test]
async fn malformed_flood_does_not_disturb_a_healthy_session() {
    let server = server().await;
    let (mut healthy, t1) = session(&server);
    let (mut victim, t2) = session(&server);
    let e = edge(&server).await;
    e.attach(healthy.id, &t1, flows(0, 1)).await.unwrap();
    e.attach(victim.id, &t2, flows(2, 3)).await.unwrap();

    const GOOD: u16 = 200;
    const BAD_PER_GOOD: usize = 25;
    let mut sent_bad = [0u64; 3];
    // The session's worker drains its ring as it would every tick.
    let mut got = Vec::new();
    for seq in 0..GOOD {
        e.send_packet(0, &rtp(seq, 1, &seq.to_be_bytes())).unwrap();
        for i in 0..BAD_PER_GOOD {
            match i % 3 {
                // Truncated varint (first byte announces 8 bytes).
                0 => {
                    e.send_datagram(Bytes::from_static(&[0xC0, 1, 2])).unwrap();
                    sent_bad[0] += 1;
                }
                // Undeclared flow id.
                1 => {
                    e.send_packet(1000 + i as u64, &rtp(1, 1, b"x")).unwrap();
                    sent_bad[1] += 1;
                }
                // The other session's flow, but not RTP (version 0).
                _ => {
                    e.send_packet(2, &[0x00, 0x11, 0x22, 0x33, 0x44]).unwrap();
                    sent_bad[2] += 1;
                }
            }
        }
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            got.extend(collect(&mut healthy, usize::MAX, Duration::ZERO).await);
        }
    }
    got.extend(
        collect(
            &mut healthy,
            usize::from(GOOD) - got.len(),
            Duration::from_secs(10),
        )
        .await,
    );
    assert_eq!(healthy.rx.dropped(), 0);
    let seqs: Vec<u16> = got
        .iter()
        .map(|(_, p)| RtpPacket::parse(p).unwrap().sequence)
        .collect();
    assert_eq!(
        seqs,
        (0..GOOD).collect::<Vec<_>>(),
        "the healthy session lost or reordered packets"
    );

    // Everything bad was counted where it belongs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = server.stats();
        if st.malformed == sent_bad[0] + sent_bad[2] && st.unknown_flow == sent_bad[1] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counts {st:?} vs sent {sent_bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(victim.stats.snapshot().rx_malformed, sent_bad[2]);
    let conn = &server.connections()[0];
    assert_eq!(
        (conn.stats.malformed, conn.stats.unknown_flow),
        (sent_bad[0] + sent_bad[2], sent_bad[1])
    );
    assert_eq!(healthy.stats.snapshot().rx_malformed, 0);
    assert_eq!(healthy.stats.snapshot().lost, 0);
    assert!(
        collect(&mut victim, 1, Duration::from_millis(50))
            .await
            .is_empty()
    );
    e.close().await;
}

#[tokio::test]
async fn reattach_from_new_connection_replaces_old_and_remove_ends() {
    let server = server().await;
    let (mut s, token) = session(&server);
    let e1 = edge(&server).await;
    e1.attach(s.id, &token, flows(0, 1)).await.unwrap();
    let e2 = edge(&server).await;
    e2.attach(s.id, &token, flows(5, 6)).await.unwrap();
    assert_eq!(
        e1.next_control_timeout(Duration::from_secs(5))
            .await
            .unwrap(),
        Some(ControlMessage::Detach {
            session_id: s.id,
            reason: error_code::REPLACED
        })
    );
    e2.send_packet(5, &rtp(3, 3, b"new")).unwrap();
    e1.send_packet(0, &rtp(4, 4, b"old")).unwrap();
    let got = collect(&mut s, 2, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 5);

    assert!(server.remove_session(s.id));
    assert_eq!(
        e2.next_control_timeout(Duration::from_secs(5))
            .await
            .unwrap(),
        Some(ControlMessage::Detach {
            session_id: s.id,
            reason: error_code::SESSION_ENDED
        })
    );
    let err = e2.attach(s.id, &token, flows(5, 6)).await.unwrap_err();
    assert!(matches!(
        err,
        NetError::Peer {
            code: error_code::ATTACH_REFUSED,
            ..
        }
    ));
    e1.close().await;
    e2.close().await;
}

#[tokio::test]
async fn flow_and_message_rules() {
    let server = server().await;
    let (s, token) = session(&server);
    let e = edge(&server).await;
    // Duplicate flow ids and foreign contexts are refused.
    let mut dup = flows(0, 0);
    let err = e.attach(s.id, &token, dup.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Peer {
                code: error_code::INVALID_FLOW,
                ..
            }
        ),
        "{err}"
    );
    dup[1].flow_id = 1;
    dup[1].context = Uuid::from_u128(99);
    let err = e.attach(s.id, &token, dup).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Peer {
                code: error_code::INVALID_FLOW,
                ..
            }
        ),
        "{err}"
    );
    // Messages for a session not attached here.
    e.send_control(&ControlMessage::DominantSpeaker {
        session_id: s.id,
        msi: 1,
    })
    .await
    .unwrap();
    assert!(matches!(
        e.next_control().await.unwrap(),
        ControlMessage::Error {
            code: error_code::NOT_ATTACHED,
            ..
        }
    ));
    // Unknown mandatory type: answered, connection kept; unknown ignorable: silent.
    e.send_raw_control(&[1, 0x7f, 0, 2, 0xab, 0xcd])
        .await
        .unwrap();
    assert!(matches!(
        e.next_control().await.unwrap(),
        ControlMessage::Error {
            code: error_code::UNKNOWN_MESSAGE,
            ..
        }
    ));
    e.send_raw_control(&[1, 0x80, 0, 0]).await.unwrap();
    e.send_control(&ControlMessage::KeepAlive { nonce: 9 })
        .await
        .unwrap();
    assert_eq!(
        e.next_control().await.unwrap(),
        ControlMessage::KeepAliveAck { nonce: 9 }
    );
    // A bad version closes the connection after an error.
    e.send_raw_control(&[2, 0x0a, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    assert!(matches!(
        e.next_control().await.unwrap(),
        ControlMessage::Error {
            code: error_code::UNSUPPORTED_VERSION,
            ..
        }
    ));
    let closed = tokio::time::timeout(Duration::from_secs(5), e.quic().closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(2))
    );
}

#[tokio::test]
async fn wrong_certificate_pin_fails_the_handshake() {
    let server = server().await;
    let mut pin = server.certificate_fingerprint();
    pin[31] ^= 0xff;
    let err = EdgeConnection::connect(&edge_config(&server, pin))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Connect { .. }), "{err}");
    let fp = mediaproc_net::fingerprint_hex(&server.certificate_fingerprint());
    assert_eq!(
        mediaproc_net::parse_fingerprint(&fp),
        Some(server.certificate_fingerprint())
    );
}

#[test]
fn mp_uri_parsing() {
    assert_eq!(
        parse_mp_uri("quic://bot.contoso.com:18732/MediaProcessor"),
        Some(("bot.contoso.com".into(), 18732))
    );
    assert_eq!(
        parse_mp_uri("quic://[::1]:5000/MediaProcessor"),
        Some(("::1".into(), 5000))
    );
    assert_eq!(
        parse_mp_uri("net.tcp://bot.contoso.com:18732/MediaProcessor"),
        None
    );
    assert_eq!(parse_mp_uri("quic://h:1/Other"), None);
}

#[tokio::test]
async fn rtcp_reports_and_round_trip_time() {
    use mediaproc_wire::rtcp::{self, ReportBlock, RtcpPacket};
    let server = MediaServer::bind(ServerConfig {
        rtcp_interval: Duration::from_millis(100),
        ..ServerConfig::development("127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    let (s, token) = session(&server);
    let e = edge(&server).await;
    e.attach(s.id, &token, flows(0, 1)).await.unwrap();
    // The edge sends 10 packets (one missing) and an SR on its render flow; the bot sends 3 on the source flow.
    for seq in (0..11u16).filter(|s| *s != 4) {
        e.send_packet(0, &rtp(seq, 7, b"edge")).unwrap();
    }
    let mut sr = [0u8; 64];
    let info = rtcp::SenderInfo {
        ntp_timestamp: 0x0000_1234_5678_0000,
        ..Default::default()
    };
    let n = rtcp::write_sender_report(7, &info, &[], &mut sr).unwrap();
    e.send_packet(0, &sr[..n]).unwrap();
    let mut tx = s.tx;
    for seq in 0..3u16 {
        tx.push(1, 0, &rtp(seq, 9, b"bot")).unwrap();
    }
    s.waker.wake();

    // The MP reports: an SR with our 3 packets on flow 1, an RR about the edge's stream on flow 0.
    let (mut saw_sr, mut saw_rr) = (None, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (saw_sr.is_none() || !saw_rr) && tokio::time::Instant::now() < deadline {
        let Ok(Ok((flow, pkt))) =
            tokio::time::timeout(Duration::from_secs(1), e.recv_packet()).await
        else {
            continue;
        };
        if !mediaproc_wire::roq::is_rtcp(&pkt) {
            continue;
        }
        for p in rtcp::parse_compound(&pkt) {
            match p.unwrap() {
                RtcpPacket::SenderReport(sr) if flow == 1 => {
                    assert_eq!(
                        (sr.ssrc, sr.info.packet_count, sr.info.octet_count),
                        (9, 3, 9)
                    );
                    saw_sr = Some(sr.info.ntp_timestamp);
                }
                RtcpPacket::ReceiverReport(rr) if flow == 0 => {
                    let b = rr.reports.iter().next().unwrap();
                    assert_eq!((b.ssrc, b.highest_sequence, b.cumulative_lost), (7, 10, 1));
                    assert_eq!(b.last_sr, 0x1234_5678, "LSR echoes the edge's SR");
                    saw_rr = true;
                }
                _ => {}
            }
        }
    }
    let sr_ntp = saw_sr.expect("no SR from the MP");
    assert!(saw_rr, "no RR from the MP");
    // The edge answers with an RR about the MP's stream; the MP derives the round-trip time.
    let block = ReportBlock {
        ssrc: 9,
        highest_sequence: 2,
        last_sr: rtcp::ntp_middle32(sr_ntp),
        delay_since_last_sr: 0,
        ..ReportBlock::default()
    };
    let mut rr = [0u8; 64];
    let n = rtcp::write_receiver_report(7, &[block], &mut rr).unwrap();
    e.send_packet(1, &rr[..n]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.stats.snapshot().rtcp_rtt_us == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no RTT from RTCP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = s.stats.snapshot();
    // DLSR 0 makes the RTT include the time since the SR was sent (≤ one report interval plus scheduling).
    assert!(st.rtcp_rtt_us < 2_000_000, "RTT {} us", st.rtcp_rtt_us);
    assert!(st.rtt_us > 0);
    assert_eq!(st.rx_rtcp, 2);
    e.close().await;
}

#[tokio::test]
async fn lost_connection_detaches_and_the_edge_can_come_back() {
    let server = MediaServer::bind(ServerConfig {
        max_sessions_per_connection: 1,
        ..ServerConfig::development("127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    let (mut s, token) = session(&server);
    let (other, other_token) = session(&server);
    let e1 = edge(&server).await;
    e1.attach(s.id, &token, flows(0, 1)).await.unwrap();
    assert!(matches!(
        next_event(&mut s).await,
        SessionEvent::Attached { .. }
    ));
    // One session per connection in this configuration.
    let err = e1
        .attach(other.id, &other_token, flows(2, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Peer {
                code: error_code::LIMIT_EXCEEDED,
                ..
            }
        ),
        "{err}"
    );
    e1.close().await;
    assert_eq!(
        next_event(&mut s).await,
        SessionEvent::Detached {
            reason: error_code::NORMAL
        }
    );
    let e2 = edge(&server).await;
    e2.attach(s.id, &token, flows(0, 1)).await.unwrap();
    e2.send_packet(0, &rtp(1, 1, b"back")).unwrap();
    assert_eq!(collect(&mut s, 1, Duration::from_secs(5)).await.len(), 1);
    e2.close().await;
}

#[test]
fn handles_can_move_to_worker_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<QuicSession>();
    send::<mediaproc_net::UdpSession>();
    send::<mediaproc_net::PacketProducer>();
    send::<mediaproc_net::PacketConsumer>();
    send_sync::<MediaServer>();
    send_sync::<EdgeConnection>();
    send_sync::<mediaproc_net::TxWaker>();
}

#[tokio::test]
async fn edge_attaches_concurrently_and_keeps_other_messages() {
    let server = server().await;
    let (a, ta) = session(&server);
    let (b, tb) = session(&server);
    let e = edge(&server).await;
    // The answer to this keep-alive arrives while the attaches wait; it must not be lost.
    e.send_control(&ControlMessage::KeepAlive { nonce: 77 })
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        e.attach(a.id, &ta, flows(0, 1)),
        e.attach(b.id, &tb, flows(2, 3))
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        e.next_control().await.unwrap(),
        ControlMessage::KeepAliveAck { nonce: 77 }
    );
    e.close().await;
}

/// A session's waker wakes the connection it is attached to and no other: with the fallback poll made
/// very long, a packet queued on another connection's session stays queued until that session's waker
/// fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waker_wakes_only_its_own_connection() {
    let mut cfg = ServerConfig::development("127.0.0.1:0".parse().unwrap());
    cfg.tx_poll_interval = Duration::from_secs(3600);
    let server = MediaServer::bind(cfg).await.unwrap();
    let (mut a, ta) = session(&server);
    let (mut b, tb) = session(&server);
    let (ea, eb) = (edge(&server).await, edge(&server).await);
    ea.attach(a.id, &ta, flows(0, 1)).await.unwrap();
    eb.attach(b.id, &tb, flows(0, 1)).await.unwrap();
    let _ = (next_event(&mut a).await, next_event(&mut b).await);
    a.tx.push(1, 0, &rtp(1, 0xA, b"to a")).unwrap();
    b.tx.push(1, 0, &rtp(2, 0xB, b"to b")).unwrap();
    a.waker.wake();
    let (_, pkt) = tokio::time::timeout(Duration::from_secs(5), ea.recv_packet())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(RtpPacket::parse(&pkt).unwrap().ssrc, 0xA);
    // B's connection was not woken: its packet is still queued.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), eb.recv_packet())
            .await
            .is_err()
    );
    assert_eq!(b.stats.snapshot().tx_packets, 0);
    b.waker.wake();
    let (_, pkt) = tokio::time::timeout(Duration::from_secs(5), eb.recv_packet())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(RtpPacket::parse(&pkt).unwrap().ssrc, 0xB);
}
