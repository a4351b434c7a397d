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
