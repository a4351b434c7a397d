//! The control API: auth, errors, limits, health, metrics, delete, and the built-in bots' lifecycle.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn post(
    daemon: &mediaproc_daemon::RunningDaemon,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = http()
        .post(format!("http://{}/v1/sessions", daemon.api_addr))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_bad_tokens_get_clear_json_errors() {
    let _serial = serial().await;
    let dir = temp_dir("api-errors");
    let daemon = daemon(&dir).await;
    let cases: Vec<(Option<&str>, String, u16, &str, &str)> = vec![
        (None, "{}".into(), 401, "unauthorized", "Authorization"),
        (Some("wrong"), "{}".into(), 401, "unauthorized", "not valid"),
        (
            Some(TOKEN),
            "{\"audio\": ".into(),
            400,
            "invalid_body",
            "line 1, column",
        ),
        (
            Some(TOKEN),
            r#"{"audio": {"direction": 3}}"#.into(),
            400,
            "invalid_body",
            "audio.direction",
        ),
        (
            Some(TOKEN),
            r#"{"colour": "red"}"#.into(),
            400,
            "invalid_body",
            "unknown field `colour`",
        ),
        (
            Some(TOKEN),
            r#"{"bot": "dancer"}"#.into(),
            400,
            "invalid_session",
            "bot: `dancer`",
        ),
        (
            Some(TOKEN),
            r#"{"bot": {"type": "play"}}"#.into(),
            400,
            "invalid_session",
            "bot.file",
        ),
        (
            Some(TOKEN),
            r#"{"bot": {"type": "play", "file": "/nonexistent.wav"}}"#.into(),
            400,
            "invalid_bot",
            "nonexistent",
        ),
        (
            Some(TOKEN),
            r#"{"audio": {"format": "Pcm44KStereo"}}"#.into(),
            400,
            "invalid_session",
            "audio.format",
        ),
        (
            Some(TOKEN),
            r#"{"video": 11}"#.into(),
            400,
            "invalid_session",
            "video",
        ),
        (
            Some(TOKEN),
            r#"{"rtp": {"codec": "g729"}}"#.into(),
            400,
            "invalid_session",
            "rtp.codec",
        ),
        (
            Some(TOKEN),
            r#"{"rtp": {"payloadType": 200}}"#.into(),
            400,
            "invalid_session",
            "payloadType",
        ),
        (
            Some(TOKEN),
            "[1, 2]".into(),
            400,
            "invalid_body",
            "expected struct",
        ),
        (
            Some(TOKEN),
            format!("{{\"callId\": \"{}\"}}", "a".repeat(70_000)),
            413,
            "body_too_large",
            "larger than",
        ),
    ];
    for (token, body, status, code, words) in cases {
        let (got, error) = post(&daemon, token, &body).await;
        let shown = &body[..body.len().min(60)];
        assert_eq!(got, status, "{shown}: {error}");
        assert_eq!(error["error"]["code"], code, "{shown}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{shown}: `{message}` should mention `{words}`"
        );
    }
    // Unknown session and route: 404 with the same error shape.
    let response = http()
        .get(format!(
            "http://{}/v1/sessions/{}",
            daemon.api_addr,
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_shown_and_deleted() {
    let _serial = serial().await;
    let dir = temp_dir("api-crud");
    let daemon = daemon(&dir).await;
    let created = create_session(
        &daemon,
        json!({"audio": {"direction": "recvonly", "unmixed": true}, "bot": "echo"}),
    )
    .await;
    let id = created["sessionId"].as_str().unwrap();
    let blob: Value = serde_json::from_str(created["blob"].as_str().unwrap()).unwrap();
    assert_eq!(blob["mpMediaSessionId"], id);
    assert_eq!(blob["edgeToken"], created["edgeToken"]);
    assert_eq!(
        blob["audioSourceContexts"],
        json!([]),
        "recvonly has no source context"
    );
    assert_eq!(blob["receiveUnmixedMeetingAudio"], true);
    assert_eq!(created["mediaConfig"]["blob"], created["blob"]);
    assert!(
        created["mediaUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/sessions/{id}/media"))
    );

    let list: Value = http()
        .get(format!("http://{}/v1/sessions", daemon.api_addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["state"], "waitingForEdge");

    let url = format!("http://{}/v1/sessions/{id}", daemon.api_addr);
    assert_eq!(
        http()
            .delete(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http()
            .delete(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The edge can no longer attach to a deleted session.
    assert!(connect_edge(&daemon, &created).await.is_err());
    daemon.shutdown().await;
}

/// `(scheduling policy, nice)` of this process's threads named `media-worker-*`, from `/proc`.
fn media_worker_scheduling() -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("media-worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
        // Fields after the command's closing parenthesis start at field 3 (state): nice is 19, policy 41.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((fields[38].parse().unwrap(), fields[16].parse().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_workers_run_at_the_priority_healthz_reports() {
    let _serial = serial().await;
    let dir = temp_dir("api-priority");
    let config = mediaproc_daemon::Config {
        media_priority: mediaproc_daemon::priority::MediaPriority::Realtime,
        workers: 2,
        ..test_config(&dir)
    };
    let daemon = mediaproc_daemon::start(config).await.unwrap();
    let health: Value = http()
        .get(format!("http://{}/healthz", daemon.api_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reported = health["workerPriority"].as_str().unwrap().to_owned();
    let threads = media_worker_scheduling();
    println!("workerPriority {reported:?}, media workers (policy, nice): {threads:?}");
    assert_eq!(threads.len(), 2, "{threads:?}");
    for (policy, nice) in threads {
        if reported.starts_with("realtime") {
            assert_eq!(policy, 1, "SCHED_FIFO: {reported}");
        } else if reported.starts_with("high") {
            // Nice -10, or the process's own if that was higher already (it is never lowered).
            assert_eq!(policy, 0, "{reported}");
            assert!(nice <= -10, "{reported}: nice {nice}");
        } else {
            assert!(reported.contains("refused"), "{reported}");
            assert_eq!(policy, 0, "{reported}");
        }
    }
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_overloaded_under_load_and_new_sessions_get_503() {
    let _serial = serial().await;
    let dir = temp_dir("api-health");
    // Thresholds far below what 40 sessions cost a worker: the synthetic load is real sessions with a tone bot
    // (encoding every frame), measured by the worker itself.
    let config = mediaproc_daemon::Config {
        heavily_loaded_at: 0.0005,
        overloaded_at: 0.001,
        ..test_config(&dir)
    };
    let daemon = mediaproc_daemon::start(config).await.unwrap();
    let health = || async {
        http()
            .get(format!("http://{}/healthz", daemon.api_addr))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(health().await["status"], "Normal");
    for _ in 0..40 {
        create_session(
            &daemon,
            json!({"bot": {"type": "tone", "frequencyHz": 300}}),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last = health().await;
    while last["status"] != "Overloaded" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = health().await;
    }
    assert_eq!(last["status"], "Overloaded", "{last}");
    let (status, error) = post(&daemon, Some(TOKEN), "{}").await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "overloaded");

    let metrics = metrics(&daemon).await;
    check_prometheus(&metrics);
    assert!(metrics.contains("mediaproc_sessions 40"), "{metrics}");
    assert!(metrics.contains("mediaproc_health_status 2"), "{metrics}");
    assert!(
        metrics.contains("mediaproc_sessions_refused_overloaded_total 1"),
        "{metrics}"
    );
    daemon.shutdown().await;
}

/// Checks the Prometheus text format: HELP/TYPE comments, then `name{labels} value` samples with numeric values;
/// a histogram's samples are `name_bucket{le="…"}`, `name_sum` and `name_count`.
fn check_prometheus(text: &str) {
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next();
            assert!(
                matches!(kind, Some("gauge" | "counter" | "histogram")),
                "{line}"
            );
            typed.insert(name.to_owned(), kind.unwrap().to_owned());
        } else if line.starts_with("# HELP ") || line.is_empty() {
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (typed.get(base).map(String::as_str) == Some("histogram")).then_some(*suffix)
            });
            match histogram {
                Some("_bucket") => {
                    assert!(series.contains("{le=\""), "a bucket without le: {line}")
                }
                Some(_) => {}
                None => assert!(
                    typed.get(name).is_some_and(|kind| kind != "histogram"),
                    "sample before its TYPE: {line}"
                ),
            }
            assert!(value.parse::<f64>().is_ok(), "{line}");
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "{line}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_bot_writes_a_wav_that_is_finalised_on_shutdown() {
    let _serial = serial().await;
    let dir = temp_dir("api-record");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "record"})).await;
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let source = speech(16_000 * 2, 16_000);
    talk_and_listen(&edge, &opus_packets(&source, 4), Duration::from_millis(300)).await;
    daemon.shutdown().await;
    let path = dir.join(format!(
        "{}-mixed.wav",
        session["sessionId"].as_str().unwrap()
    ));
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert!(samples.len() >= 16_000 * 2, "{} samples", samples.len());
    let (_, lag) = best_correlation(&source, &samples, 16_000);
    let windowed = windowed_correlation(&source, &samples, lag);
    assert!(
        windowed > 0.6,
        "the recording does not hold the speech: {windowed:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_bot_plays_a_stereo_44k1_wav_to_the_edge() {
    let _serial = serial().await;
    let dir = temp_dir("api-play");
    // 1.5 s of speech at 44.1 kHz, stereo: the bot must mix it down and resample it to 16 kHz.
    let speech_44k = speech(44_100 * 3 / 2, 44_100);
    let path = dir.join("prompt.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for s in &speech_44k {
        writer.write_sample(*s).unwrap();
        writer.write_sample(*s).unwrap();
    }
    writer.finalize().unwrap();
    let daemon = daemon(&dir).await;
    let session = create_session(
        &daemon,
        json!({"bot": {"type": "play", "file": path.to_str().unwrap()}}),
    )
    .await;
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let heard = talk_and_listen(&edge, &[], Duration::from_millis(2500)).await;
    let expected = speech(16_000 * 3 / 2, 16_000);
    // The prompt started playing before the edge attached: find where half a second of what the edge heard sits
    // in the prompt, then compare.
    let onset = heard
        .iter()
        .position(|s| s.abs() > 1000)
        .expect("the edge heard nothing");
    let chunk = &heard[onset..(onset + 8_000).min(heard.len())];
    let (_, at) = best_correlation(chunk, &expected, 16_000);
    let windowed = windowed_correlation(chunk, &expected, at);
    assert!(
        windowed > 0.6,
        "the edge does not hear the prompt: {windowed:.3}"
    );
    daemon.shutdown().await;
}

/// Every network counter (ring overflow, strict RTP, the QUIC endpoint's caps and closes) and each edge's
/// per-stream statistics appear in `GET /v1/sessions/{id}` and in `/metrics`; a stranger's packets on the
/// RTP/UDP edge are counted as wrong-source drops in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_counters_and_both_edges_streams_are_in_stats_and_metrics() {
    use mediaproc_daemon::worker::STREAM_FIELDS;
    let _serial = serial().await;
    let dir = temp_dir("api-netstats");
    let daemon = daemon(&dir).await;
    // Payload type 111 on both edges (the pipeline takes one payload type; the QUIC edge sends 111).
    let session =
        create_session(&daemon, json!({"bot": "echo", "rtp": {"payloadType": 111}})).await;
    let rtp_local: std::net::SocketAddr =
        session["rtp"]["local"].as_str().unwrap().parse().unwrap();
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let pcm = speech(16_000, 16_000);
    talk_and_listen(
        &edge,
        &opus_packets(&pcm, 0x1234),
        Duration::from_millis(100),
    )
    .await;

    // The RTP/UDP peer latches first; a stranger's two packets (fewer than rebindPackets) are dropped.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for (i, packet) in opus_packets(&pcm, 0x5678).iter().enumerate() {
        pace.tick().await;
        peer.send_to(packet, rtp_local).await.unwrap();
        if i == 10 || i == 20 {
            stranger.send_to(packet, rtp_local).await.unwrap();
        }
    }

    let mut stats = Value::Null;
    for _ in 0..200 {
        stats = session_stats(&daemon, &session).await;
        let s = &stats["stats"];
        if s["rtpUdp"]["rxWrongSource"].as_u64() == Some(2)
            && s["rtpUdp"]["stream"]["received"].as_u64() > Some(20)
            && s["streams"][0]["received"].as_u64() > Some(20)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = &stats["stats"];
    assert_eq!(s["rtpUdp"]["rxWrongSource"], 2, "{stats}");
    assert_eq!(s["rtpUdp"]["stream"]["sourceId"], 0x5678, "{stats}");
    assert_eq!(s["streams"][0]["sourceId"], SPEAKER_MSI, "{stats}");
    for member in [
        "sourceChanges",
        "rxRingDropped",
        "txRingDropped",
        "lost",
        "jitterUs",
        "rtcpRttUs",
    ] {
        assert!(s["rtpUdp"][member].is_u64(), "rtpUdp.{member}: {stats}");
    }
    for member in [
        "rxRingDropped",
        "txRingDropped",
        "rtcpRttUs",
        "jitterUs",
        "lost",
    ] {
        assert!(s["network"][member].is_u64(), "network.{member}: {stats}");
    }
    assert!(s["txRingDropped"].is_u64(), "{stats}");
    // The echo bot takes no events: none of them counts as dropped.
    assert_eq!(s["botEventsDropped"], 0, "{stats}");
    for field in STREAM_FIELDS {
        assert!(
            s["rtpUdp"]["stream"][field.json].is_u64(),
            "rtpUdp.stream.{}: {stats}",
            field.json
        );
        assert!(
            s["streams"][0][field.json].is_u64(),
            "streams[0].{}: {stats}",
            field.json
        );
    }
    assert!(
        s["rtpUdp"]["stream"]["received"].as_u64().unwrap() > 20,
        "{stats}"
    );

    let metrics = metrics(&daemon).await;
    check_prometheus(&metrics);
    for name in [
        "mediaproc_rx_ring_dropped_total",
        "mediaproc_tx_ring_dropped_total",
        "mediaproc_rtp_udp_source_changes_total",
        "mediaproc_quic_attach_refused_total",
        "mediaproc_quic_connections_refused_total",
        "mediaproc_quic_connections_refused_per_address_total",
        "mediaproc_quic_retries_total",
        "mediaproc_quic_handshakes_failed_total",
        "mediaproc_quic_closed_attach_deadline_total",
        "mediaproc_quic_closed_refused_attaches_total",
        "mediaproc_quic_closed_control_stalled_total",
    ] {
        assert!(metrics.contains(&format!("\n{name} ")), "{name}: {metrics}");
    }
    assert!(
        metrics.contains("\nmediaproc_rtp_udp_wrong_source_dropped_total 2\n"),
        "{metrics}"
    );
    let id = session["sessionId"].as_str().unwrap();
    for edge in ["quic", "rtp_udp"] {
        for name in [
            "mediaproc_edge_lost_total",
            "mediaproc_edge_jitter_us",
            "mediaproc_edge_rtcp_rtt_us",
        ] {
            let series = format!("\n{name}{{session=\"{id}\",edge=\"{edge}\"}} ");
            assert!(metrics.contains(&series), "{series}: {metrics}");
        }
        let source = if edge == "quic" { SPEAKER_MSI } else { 0x5678 };
        for field in STREAM_FIELDS {
            let series = format!(
                "\nmediaproc_stream_{}{{session=\"{id}\",edge=\"{edge}\",source=\"{source}\"}} ",
                field.metric
            );
            assert!(metrics.contains(&series), "{series}: {metrics}");
        }
    }
    daemon.shutdown().await;
}

/// `rtp.rebindPackets` reaches the RTP/UDP edge: with 2, a peer that moves to a new port (a NAT rebinding) is
/// followed after two in-sequence packets, counted once in `sourceChanges` and `/metrics`, and the echo goes to
/// the new port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symmetric_rtp_edge_follows_a_rebinding_after_rebind_packets() {
    let _serial = serial().await;
    let dir = temp_dir("api-rebind");
    let daemon = daemon(&dir).await;
    let session = create_session(
        &daemon,
        json!({"bot": "echo", "rtp": {"payloadType": 111, "rebindPackets": 2}}),
    )
    .await;
    let rtp_local: std::net::SocketAddr =
        session["rtp"]["local"].as_str().unwrap().parse().unwrap();
    let before = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let after = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let packets = opus_packets(&speech(16_000, 16_000), 0x9abc);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for (i, packet) in packets.iter().enumerate() {
        pace.tick().await;
        let from = if i < 10 { &before } else { &after };
        from.send_to(packet, rtp_local).await.unwrap();
    }
    // The echo now goes to the new port.
    let mut buf = [0u8; 1500];
    let (_, from) = tokio::time::timeout(Duration::from_secs(5), after.recv_from(&mut buf))
        .await
        .expect("no echo on the new port")
        .unwrap();
    assert_eq!(from, rtp_local);
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = session_stats(&daemon, &session).await;
        if stats["stats"]["rtpUdp"]["sourceChanges"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let udp = &stats["stats"]["rtpUdp"];
    assert_eq!(udp["sourceChanges"], 1, "{stats}");
    // Only the first packet from the new port (one short of rebindPackets) was dropped.
    assert_eq!(udp["rxWrongSource"], 1, "{stats}");
    let metrics = metrics(&daemon).await;
    assert!(
        metrics.contains("\nmediaproc_rtp_udp_source_changes_total 1\n"),
        "{metrics}"
    );
    daemon.shutdown().await;
}

async fn patch(
    daemon: &mediaproc_daemon::RunningDaemon,
    session: &Value,
    body: Value,
) -> (u16, Value) {
    let response = http()
        .patch(format!(
            "http://{}/v1/sessions/{}",
            daemon.api_addr,
            session["sessionId"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls the session's statistics until `done` holds (published once a second), or fails after 5 s.
async fn stats_until(
    daemon: &mediaproc_daemon::RunningDaemon,
    session: &Value,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = session_stats(daemon, session).await;
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The encoder: chosen at creation, changed at run time with PATCH, and in-band FEC following the loss the far end
/// reports in RTCP (auto: off on a clean path, on when the peer reports loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_settings_at_creation_at_run_time_and_fec_following_rtcp_loss() {
    let _serial = serial().await;
    let dir = temp_dir("api-encoder");
    let daemon = daemon(&dir).await;

    let (status, body) = post(
        &daemon,
        Some(TOKEN),
        r#"{"bot":"echo","encoder":{"fec":"sometimes"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("encoder.fec"),
        "{body}"
    );

    let session = create_session(
        &daemon,
        json!({"bot": "echo", "rtp": {"payloadType": 111},
               "encoder": {"bitrateBps": 24000, "complexity": 3}}),
    )
    .await;
    let rtp_local: std::net::SocketAddr =
        session["rtp"]["local"].as_str().unwrap().parse().unwrap();
    let far = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let packets = opus_packets(&speech(16_000, 16_000), 0x1111);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for packet in &packets {
        pace.tick().await;
        far.send_to(packet, rtp_local).await.unwrap();
    }
    // Our stream's SSRC, from the echo.
    let mut buf = [0u8; 1500];
    let ssrc = loop {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), far.recv_from(&mut buf))
            .await
            .expect("no echo")
            .unwrap();
        if let Ok(rtp) = mediaproc_wire::RtpPacket::parse(&buf[..len]) {
            break rtp.ssrc;
        }
    };
    let stats = stats_until(&daemon, &session, "creation settings", |s| {
        s["stats"]["encoder"]["bitrateBps"] == 24000
    })
    .await;
    let encoder = &stats["stats"]["encoder"];
    assert_eq!(encoder["complexity"], 3, "{stats}");
    assert_eq!(encoder["fec"], "auto", "{stats}");
    assert_eq!(encoder["inbandFec"], false, "a clean path: no FEC {stats}");

    // The far end reports 10 % loss of our stream: FEC comes on.
    let block = mediaproc_wire::rtcp::ReportBlock {
        ssrc,
        fraction_lost: 26,
        ..Default::default()
    };
    let mut rr = [0u8; 64];
    let len = mediaproc_wire::rtcp::write_receiver_report(0x1111, &[block], &mut rr).unwrap();
    far.send_to(&rr[..len], rtp_local).await.unwrap();
    let stats = stats_until(&daemon, &session, "FEC after a loss report", |s| {
        s["stats"]["encoder"]["inbandFec"] == true
    })
    .await;
    assert!(
        stats["stats"]["encoder"]["expectedLossPercent"]
            .as_u64()
            .unwrap()
            >= 2,
        "{stats}"
    );

    // At run time: FEC off whatever the peer reports, a new bitrate.
    let (status, body) = patch(
        &daemon,
        &session,
        json!({"encoder": {"fec": "off", "bitrateBps": 40000}}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let stats = stats_until(&daemon, &session, "FEC off by PATCH", |s| {
        s["stats"]["encoder"]["fec"] == "off"
    })
    .await;
    assert_eq!(stats["stats"]["encoder"]["inbandFec"], false, "{stats}");
    assert_eq!(stats["stats"]["encoder"]["bitrateBps"], 40000, "{stats}");

    // Bad values and unknown members are refused, naming the member.
    let (status, body) = patch(&daemon, &session, json!({"encoder": {"complexity": 11}})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("encoder.complexity"),
        "{body}"
    );
    let (status, body) = patch(&daemon, &session, json!({"encodr": {}})).await;
    assert_eq!(status, 400, "{body}");
    daemon.shutdown().await;
}
