//! The Rust in-process bot API, and unmixed audio (one stream per speaker) over the WebSocket.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use mediaproc_net::{EdgeConfig, EdgeConnection, ServerTrust, parse_fingerprint};
use mediaproc_pipeline::{ReceivedAudio, SampleRate};
use mediaproc_wire::control::{Codec, Direction, FlowDecl, MediaKind};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_rust_bot_echoes_through_its_ring_handles() {
    let _serial = serial().await;
    let dir = temp_dir("inproc");
    let daemon = daemon(&dir).await;
    let (session, mut port) = daemon.open_session(json!({})).await.unwrap();
    assert_eq!(session["mpUri"].as_str().unwrap(), daemon.mp_uri);
    let stop = Arc::new(AtomicBool::new(false));
    let bot = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut frame = ReceivedAudio::new(SampleRate::HZ_16000);
            let mut echoed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                while port.endpoint.inbound.pop(&mut frame) {
                    if port.endpoint.outbound.push(frame.mixed()).is_ok() {
                        echoed += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            echoed
        })
    };
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let source = speech(16_000 * 2, 16_000);
    let received = talk_and_listen(
        &edge,
        &opus_packets(&source, 11),
        Duration::from_millis(600),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let echoed = bot.join().unwrap();
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    assert!(echoed > 90, "the bot echoed {echoed} frames");
    assert!(
        windowed > 0.8 * ceiling,
        "windowed {windowed:.3} vs ceiling {ceiling:.3}"
    );
    // A WebSocket bot cannot take over an in-process session.
    let url = format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmixed_audio_reaches_the_websocket_bot_per_speaker() {
    let _serial = serial().await;
    let dir = temp_dir("unmixed");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"audio": {"unmixed": true}})).await;
    let url = format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    );
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    // An edge with two speakers (media source ids 21 and 22) on two render flows.
    let blob: Value = serde_json::from_str(session["blob"].as_str().unwrap()).unwrap();
    let render = Uuid::parse_str(blob["audioRenderContexts"][0].as_str().unwrap()).unwrap();
    let conn = EdgeConnection::connect(&EdgeConfig {
        server: daemon.media_addr.unwrap(),
        server_name: "localhost".into(),
        trust: ServerTrust::PinnedSha256(
            parse_fingerprint(session["certificateSha256"].as_str().unwrap()).unwrap(),
        ),
        keep_alive: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let flow = |flow_id, msi| FlowDecl {
        flow_id,
        direction: Direction::Render,
        media: MediaKind::Audio,
        context: render,
        msi,
        payload_type: 111,
        codec: Codec::Opus,
    };
    let id = Uuid::parse_str(session["sessionId"].as_str().unwrap()).unwrap();
    conn.attach(
        id,
        session["edgeToken"].as_str().unwrap().as_bytes(),
        vec![flow(1, 21), flow(3, 22)],
    )
    .await
    .unwrap();
    let low = opus_packets(&speech(16_000 * 2, 16_000), 100);
    let high: Vec<i16> = speech(16_000 * 2, 16_000).iter().map(|s| s / 2).collect();
    let high = opus_packets(&high, 200);
    let talker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        for (a, b) in low.iter().zip(&high) {
            interval.tick().await;
            conn.send_packet(1, a).unwrap();
            conn.send_packet(3, b).unwrap();
        }
        conn
    });

    let (mut seen, mut mixed) = (std::collections::BTreeMap::<u32, Vec<u64>>::new(), 0);
    let mut stream = socket;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        else {
            continue;
        };
        if let Message::Binary(bytes) = message {
            if bytes.len() == 640 {
                mixed += 1;
            } else {
                assert_eq!(
                    bytes.len(),
                    16 + 640,
                    "an unmixed message is a 16-byte header and one frame"
                );
                assert_eq!(&bytes[..4], b"UMX1");
                let msi = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
                let timestamp = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
                seen.entry(msi).or_default().push(timestamp);
            }
        }
    }
    let _conn = talker.await.unwrap();
    assert!(mixed > 80, "{mixed} mixed frames");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![21, 22],
        "speakers seen: {:?}",
        seen.keys()
    );
    for (msi, stamps) in &seen {
        assert!(stamps.len() > 50, "speaker {msi}: {} frames", stamps.len());
        // Timestamps are 100 ns ticks of the frame's media time: increasing in 20 ms (200 000 tick) steps.
        assert!(
            stamps
                .windows(2)
                .all(|w| w[1] > w[0] && (w[1] - w[0]) % 200_000 == 0),
            "speaker {msi}: {stamps:?}"
        );
    }
    daemon.shutdown().await;
}
