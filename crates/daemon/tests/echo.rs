//! End to end over real sockets: an edge speaks Opus over QUIC to the daemon, the built-in echo bot sends it back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_goes_edge_to_echo_bot_and_back_correlated() {
    let _serial = serial().await;
    let dir = temp_dir("echo");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;
    assert!(
        session["mpUri"]
            .as_str()
            .unwrap()
            .starts_with("quic://localhost:")
    );
    let edge = connect_edge(&daemon, &session).await.unwrap();

    let source = speech(16_000 * 3, 16_000);
    let packets = opus_packets(&source, 0x1234);
    let received = talk_and_listen(&edge, &packets, Duration::from_millis(600)).await;
    let (correlation, lag) = best_correlation(&source, &received, 16_000);
    let lag_ms = lag as f64 / 16.0;
    println!(
        "echo: received {} samples, correlation {correlation:.3} at {lag_ms:.1} ms",
        received.len()
    );
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    println!("echo: windowed correlation {windowed:.3}, two-generation codec ceiling {ceiling:.3}");
    // The echo must be nearly as close to the source as two Opus generations allow (measured: 0.61 of a 0.62
    // ceiling on a quiet machine); the margin absorbs the jitter buffer's time-warping when the machine is loaded.
    // Frames lost or misordered on the way would pull it far below (an unrelated signal scores near 0).
    assert!(
        windowed > 0.8 * ceiling,
        "windowed correlation {windowed:.3} vs ceiling {ceiling:.3}"
    );
    // The round trip (jitter buffer, two ticks, codec delay) stays well under 200 ms on loopback.
    assert!(lag_ms < 200.0, "lag {lag_ms} ms");

    let stats = session_stats(&daemon, &session).await;
    assert_eq!(stats["state"], "active", "{stats}");
    assert!(
        stats["stats"]["echoFrames"].as_u64().unwrap() > 100,
        "{stats}"
    );
    // Both directions' hand-offs are measured: packet in → the bot's ring, and the bot's frame → the packet out
    // (queued at the tick, handed to the QUIC connection by the network side).
    let latency = &stats["stats"]["latency"];
    for stage in ["packetToWorkerMs", "tickToBotMs", "botToSentMs"] {
        assert!(latency[stage]["p99"].is_number(), "{stage}: {latency}");
    }
    let text = metrics(&daemon).await;
    let sent = metric_value(&text, "mediaproc_bot_to_sent_seconds_count").unwrap_or(0);
    assert!(sent > 100, "the send hand-off counted {sent} packets");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_garbage_do_not_disturb_a_healthy_session() {
    let _serial = serial().await;
    let dir = temp_dir("garbage");
    let daemon = daemon(&dir).await;
    let healthy = create_session(&daemon, json!({"bot": "echo"})).await;
    let victim = create_session(&daemon, json!({"bot": "echo"})).await;

    // An edge with the wrong token is refused.
    let mut forged = victim.clone();
    forged["edgeToken"] = json!("0000000000000000000000000000000000000000000000000000000000000000");
    assert!(
        connect_edge(&daemon, &forged).await.is_err(),
        "a wrong token must be refused"
    );
    // An unknown session is refused too, without saying whether it exists.
    let mut unknown = victim.clone();
    unknown["sessionId"] = json!(uuid::Uuid::new_v4().to_string());
    assert!(connect_edge(&daemon, &unknown).await.is_err());

    // The healthy session works while garbage datagrams and malformed RTP arrive on its connection.
    let edge = connect_edge(&daemon, &healthy).await.unwrap();
    for i in 0..300u32 {
        let junk: Vec<u8> = (0..(i % 60)).map(|b| (b * 37 + i) as u8).collect();
        let _ = edge.conn.send_datagram(junk.into());
        let _ = edge.conn.send_packet(RENDER_FLOW, &[0x80, 0x6f, 0, 1]);
    }
    let source = speech(16_000 * 2, 16_000);
    let received =
        talk_and_listen(&edge, &opus_packets(&source, 9), Duration::from_millis(600)).await;
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    assert!(
        windowed > 0.8 * ceiling,
        "windowed correlation {windowed:.3} vs ceiling {ceiling:.3}"
    );
    let stats = session_stats(&daemon, &healthy).await;
    // The flood was counted (and dropped) by the network layer; the session kept its audio.
    assert!(
        stats["stats"]["network"]["rxMalformed"].as_u64().unwrap() >= 300,
        "{stats}"
    );
    daemon.shutdown().await;
}

/// proto/SPEC.md §4.1: the edge chooses each flow's payload type. Flows declared with 96 (as an edge written from the
/// spec on another stack did) get their audio decoded and the echo comes back with 96; packets with another payload
/// type on the flow are ignored and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_declared_with_payload_type_96_get_audio_both_ways() {
    let _serial = serial().await;
    let dir = temp_dir("pt96");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;
    let edge = connect_edge_with_payload_type(&daemon, &session, 96)
        .await
        .unwrap();

    let source = speech(16_000 * 3, 16_000);
    let packets = opus_packets_with_payload_type(&source, 0x9696, 96);
    let received = talk_and_listen(&edge, &packets, Duration::from_millis(600)).await;
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    println!("pt 96: windowed correlation {windowed:.3}, ceiling {ceiling:.3}");
    // The same bar as the payload type 111 echo above.
    assert!(
        windowed > 0.8 * ceiling,
        "windowed correlation {windowed:.3} vs ceiling {ceiling:.3}"
    );

    // The echo leaves on the source flow with the declared payload type.
    let more = opus_packets_with_payload_type(&source[..16_000], 0x9696, 96);
    for (i, packet) in more.iter().enumerate() {
        let mut packet = packet.clone();
        // Continue the sequence and timestamps of the stream above.
        let seq = (packets.len() + i) as u16;
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        let ts = ((packets.len() + i) as u32) * 960;
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        edge.conn.send_packet(RENDER_FLOW, &packet).unwrap();
    }
    let (flow, bytes) = tokio::time::timeout(Duration::from_secs(5), edge.conn.recv_packet())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flow, SOURCE_FLOW);
    let rtp = mediaproc_wire::RtpPacket::parse(&bytes).unwrap();
    assert_eq!(
        rtp.payload_type, 96,
        "the echo carries the declared payload type"
    );

    // Packets with the reference edge's 111 on a flow declared 96 are not audio of that flow.
    let before = session_stats(&daemon, &session).await["stats"]["packetsIgnored"]
        .as_u64()
        .unwrap();
    let wrong = opus_packets_with_payload_type(&source[..320 * 10], 0x9696, 111);
    for packet in &wrong {
        edge.conn.send_packet(RENDER_FLOW, packet).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = session_stats(&daemon, &session).await;
        let ignored = stats["stats"]["packetsIgnored"].as_u64().unwrap();
        if ignored >= before + wrong.len() as u64 {
            assert!(
                !stats["stats"]["streams"].as_array().unwrap().is_empty(),
                "the flow's stream is in the statistics: {stats}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ignored {ignored}, expected {} more than {before}: {stats}",
            wrong.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.shutdown().await;
}
