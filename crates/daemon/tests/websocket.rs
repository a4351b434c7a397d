//! The bot WebSocket end to end: a bot in "another language" (here: a plain WebSocket client) echoes audio,
//! places marks, clears, receives DTMF, disconnects and reconnects; malformed messages get error events.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mediaproc_wire::control::ControlMessage;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_bot(session: &Value) -> (Socket, Value) {
    let url = format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let start = next_text(&mut socket).await;
    assert_eq!(start["event"], "start", "{start}");
    (socket, start)
}

async fn next_text(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Waits for a text event with this name, skipping audio and other events.
async fn wait_event(socket: &mut Socket, name: &str) -> Value {
    loop {
        let event = next_text(socket).await;
        if event["event"] == name {
            return event;
        }
    }
}

fn tone_frame(frequency: f64, offset: usize) -> Vec<u8> {
    (0..320)
        .flat_map(|i| {
            let t = (offset + i) as f64 / 16_000.0;
            (((t * frequency * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bot_echoes_speech_back_to_the_edge() {
    let _serial = serial().await;
    let dir = temp_dir("ws-echo");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "websocket"})).await;
    let (socket, start) = connect_bot(&session).await;
    assert_eq!(start["format"]["frameBytes"], 640);
    assert_eq!(start["sessionId"], session["sessionId"]);
    // The bot: echo every binary frame (a Vonage-style bot knows nothing else).
    let (mut sink, mut stream) = socket.split();
    let bot = tokio::spawn(async move {
        let mut frames = 0u32;
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(bytes) = message {
                assert_eq!(bytes.len(), 640);
                frames += 1;
                if sink.send(Message::Binary(bytes)).await.is_err() {
                    break;
                }
            }
        }
        frames
    });
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let source = speech(16_000 * 3, 16_000);
    let received =
        talk_and_listen(&edge, &opus_packets(&source, 5), Duration::from_millis(700)).await;
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    println!(
        "websocket echo: windowed correlation {windowed:.3} (ceiling {ceiling:.3}), lag {:.1} ms",
        lag as f64 / 16.0
    );
    assert!(
        windowed > 0.8 * ceiling,
        "windowed {windowed:.3} vs ceiling {ceiling:.3}"
    );
    daemon.shutdown().await;
    let frames = bot.await.unwrap();
    assert!(frames > 150, "the bot saw {frames} frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_come_back_in_order_and_clear_discards_queued_audio() {
    let _serial = serial().await;
    let dir = temp_dir("ws-marks");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({})).await;
    let (mut socket, _) = connect_bot(&session).await;
    let _edge = connect_edge(&daemon, &session).await.unwrap();

    // Short audio then a mark, twice: both marks come back in order, not cleared, after their audio played.
    let sent_at = tokio::time::Instant::now();
    for (name, frames) in [("first", 5), ("second", 5)] {
        for i in 0..frames {
            socket
                .send(Message::Binary(tone_frame(440.0, i * 320).into()))
                .await
                .unwrap();
        }
        socket
            .send(Message::Text(
                json!({"action": "mark", "name": name}).to_string().into(),
            ))
            .await
            .unwrap();
    }
    let first = wait_event(&mut socket, "mark").await;
    let first_at = sent_at.elapsed();
    let second = wait_event(&mut socket, "mark").await;
    let second_at = sent_at.elapsed();
    assert_eq!(
        (first["name"].as_str(), first["cleared"].as_bool()),
        (Some("first"), Some(false)),
        "{first}"
    );
    assert_eq!(
        (second["name"].as_str(), second["cleared"].as_bool()),
        (Some("second"), Some(false)),
        "{second}"
    );
    // Five frames are 100 ms of audio: a mark cannot come back before its audio was paced out.
    assert!(
        first_at >= Duration::from_millis(80),
        "first mark after {first_at:?}"
    );
    assert!(
        second_at >= first_at + Duration::from_millis(80),
        "second mark after {second_at:?}"
    );

    // Barge-in: 5 s of audio queued faster than real time, a mark behind it, then `clear`.
    for i in 0..250 {
        socket
            .send(Message::Binary(tone_frame(300.0, i * 320).into()))
            .await
            .unwrap();
    }
    socket
        .send(Message::Text(
            json!({"action": "mark", "name": "long"}).to_string().into(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cleared_at = tokio::time::Instant::now();
    socket
        .send(Message::Text(json!({"action": "clear"}).to_string().into()))
        .await
        .unwrap();
    let long = wait_event(&mut socket, "mark").await;
    assert_eq!(
        (long["name"].as_str(), long["cleared"].as_bool()),
        (Some("long"), Some(true)),
        "{long}"
    );
    // The mark is reported as soon as the clear is applied: within a frame plus scheduling slack.
    assert!(
        cleared_at.elapsed() < Duration::from_millis(200),
        "clear took {:?}",
        cleared_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stats: Value = session_stats(&daemon, &session).await;
    let cleared = stats["stats"]["framesCleared"].as_u64().unwrap();
    assert!(cleared >= 200, "only {cleared} frames cleared: {stats}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_from_the_edge_reaches_the_bot_and_the_bot_can_reconnect() {
    let _serial = serial().await;
    let dir = temp_dir("ws-dtmf");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "websocket"})).await;
    let (mut socket, _) = connect_bot(&session).await;
    let edge = connect_edge(&daemon, &session).await.unwrap();
    edge.conn
        .send_control(&ControlMessage::Dtmf {
            session_id: edge.session_id,
            event: 11,
            duration_ms: 120,
        })
        .await
        .unwrap();
    let dtmf = wait_event(&mut socket, "dtmf").await;
    assert_eq!(dtmf["digit"], "#", "{dtmf}");
    assert_eq!(dtmf["durationMs"], 120);

    // A second bot cannot take the session while the first is connected.
    let url = format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_err());
    // The bot goes away; the call goes on; the bot comes back and receives audio frames again.
    socket.close(None).await.unwrap();
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Frames flow once the edge sends media.
    let edge = std::sync::Arc::new(edge);
    let talker = {
        let edge = edge.clone();
        tokio::spawn(async move {
            let packets = opus_packets(&speech(16_000 * 3, 16_000), 3);
            talk_and_listen(&edge, &packets, Duration::ZERO).await;
        })
    };
    let (mut again, _) = connect_bot(&session).await;
    let mut frames = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while frames < 10 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(Message::Binary(bytes)))) =
            tokio::time::timeout(Duration::from_secs(1), again.next()).await
        {
            assert_eq!(bytes.len(), 640);
            frames += 1;
        }
    }
    assert_eq!(frames, 10, "frames after reconnecting");
    talker.abort();
    // A wrong bot token is refused.
    let bad = format!("{}?token=nope", session["mediaUrl"].as_str().unwrap());
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bot_messages_get_error_events_and_the_session_goes_on() {
    let _serial = serial().await;
    let dir = temp_dir("ws-errors");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({})).await;
    let (mut socket, _) = connect_bot(&session).await;
    for (message, code) in [
        ("not json", "invalid_message"),
        (r#"{"action": "jump"}"#, "unknown_action"),
        (r#"{"nothing": 1}"#, "invalid_message"),
        (r#"{"action": "mark"}"#, "invalid_message"),
        (r#"{"action": "dtmf", "digits": "12"}"#, "not_supported"),
    ] {
        socket.send(Message::Text(message.into())).await.unwrap();
        let error = wait_event(&mut socket, "error").await;
        assert_eq!(error["code"], code, "{message}: {error}");
    }
    let long_name = "x".repeat(500);
    socket
        .send(Message::Text(
            json!({"action": "mark", "name": long_name})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        wait_event(&mut socket, "error").await["code"],
        "mark_refused"
    );
    // Still alive: a mark after a frame comes back.
    socket
        .send(Message::Binary(tone_frame(500.0, 0).into()))
        .await
        .unwrap();
    socket
        .send(Message::Text(
            json!({"action": "mark", "name": "alive"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(wait_event(&mut socket, "mark").await["name"], "alive");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_behind_a_burst_larger_than_the_queue_is_applied_at_once() {
    let _serial = serial().await;
    let dir = temp_dir("ws-burst");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({})).await;
    let (mut socket, _) = connect_bot(&session).await;
    let _edge = connect_edge(&daemon, &session).await.unwrap();
    // 12 s of audio in 100-frame messages: 10 s fill the outbound queue, the rest is held by the bridge.
    for message in 0..6 {
        let bytes: Vec<u8> = (0..100)
            .flat_map(|i| tone_frame(200.0, (message * 100 + i) * 320))
            .collect();
        socket.send(Message::Binary(bytes.into())).await.unwrap();
    }
    socket
        .send(Message::Text(
            json!({"action": "mark", "name": "behind"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cleared_at = tokio::time::Instant::now();
    socket
        .send(Message::Text(json!({"action": "clear"}).to_string().into()))
        .await
        .unwrap();
    let mark = wait_event(&mut socket, "mark").await;
    assert_eq!(
        (mark["name"].as_str(), mark["cleared"].as_bool()),
        (Some("behind"), Some(true)),
        "{mark}"
    );
    assert!(
        cleared_at.elapsed() < Duration::from_millis(200),
        "clear took {:?}",
        cleared_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stats: Value = session_stats(&daemon, &session).await;
    // The queue held 10 s (500 frames) minus what played before the clear.
    let cleared = stats["stats"]["framesCleared"].as_u64().unwrap();
    assert!((470..=500).contains(&cleared), "{cleared} frames cleared");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_route_discloses_nothing_without_a_token() {
    let _serial = serial().await;
    let dir = temp_dir("ws-auth");
    let daemon = daemon(&dir).await;
    let unknown = format!(
        "ws://{}/v1/sessions/{}/media?token=guess",
        daemon.api_addr,
        uuid::Uuid::new_v4()
    );
    match tokio_tungstenite::connect_async(unknown).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("{other:?}"),
    }
    daemon.shutdown().await;
}
