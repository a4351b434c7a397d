//! The media edge against a real daemon on loopback: it attaches with the blob's token, speaks for participants,
//! hears the echo; its loss, jitter and drift options move the session's statistics in the expected direction.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use mediaproc_blob::MediaSessionConfig;
use mediaproc_callsim::edge::{EdgeLive, EdgeOptions, EdgeReport, EdgeTarget, run_edge};
use mediaproc_daemon::Config;
use mediaproc_net::{ServerTrust, parse_fingerprint};
use serde_json::{Value, json};

const TOKEN: &str = "edge-test-token";

/// The runs measure real-time audio: one at a time, so parallel tests do not disturb each other's timing.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Run {
    report: EdgeReport,
    stream: Value,
}

/// A daemon on loopback with `n` echo sessions; returns it, each session's API answer and its edge target.
async fn daemon_with_sessions(
    n: usize,
) -> (mediaproc_daemon::RunningDaemon, Vec<(Value, EdgeTarget)>) {
    let dir = std::env::temp_dir().join(format!("callsim-edge-{}", uuid::Uuid::new_v4().simple()));
    let daemon = mediaproc_daemon::start(Config {
        api: "127.0.0.1:0".parse().unwrap(),
        media: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TOKEN.into()),
        workers: 1,
        recordings_dir: dir,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..n {
        let session: Value = reqwest::Client::new()
            .post(format!("http://{}/v1/sessions", daemon.api_addr))
            .bearer_auth(TOKEN)
            .json(&json!({"bot": "echo"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let blob = MediaSessionConfig::from_blob(session["blob"].as_str().unwrap()).unwrap();
        let target = EdgeTarget::from_blob(&blob).await.unwrap();
        sessions.push((session, target));
    }
    (daemon, sessions)
}

async fn run(options: impl FnOnce(&mut EdgeOptions)) -> Run {
    let _serial = SERIAL.lock().await;
    let (daemon, mut sessions) = daemon_with_sessions(1).await;
    let (session, target) = sessions.remove(0);
    let http = reqwest::Client::new();
    let trust = ServerTrust::PinnedSha256(parse_fingerprint(&daemon.certificate_sha256).unwrap());
    let mut edge = EdgeOptions::new(trust, Duration::from_secs(6));
    edge.turn = Duration::from_millis(1000);
    edge.talk = Duration::from_millis(700);
    options(&mut edge);
    let report = run_edge(target, edge, Arc::new(EdgeLive::default()))
        .await
        .unwrap();
    let stats: Value = http
        .get(format!(
            "http://{}/v1/sessions/{}",
            daemon.api_addr,
            session["sessionId"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    daemon.shutdown().await;
    let streams = stats["stats"]["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // One stream per participant; sum the counters, keep the largest delay.
    let sum = |key: &str| {
        streams
            .iter()
            .map(|s| s[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let max = |key: &str| {
        streams
            .iter()
            .map(|s| s[key].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let stream = json!({
        "streams": streams.len(),
        "received": sum("received"),
        "concealed": sum("concealed"),
        "late": sum("late"),
        "reordered": sum("reordered"),
        "accelerated": sum("accelerated"),
        "stretched": sum("stretched"),
        "targetDelayMs": max("targetDelayMs"),
    });
    println!("{stream} round trips {:?}", report.round_trips);
    Run { report, stream }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_edge_talks_and_hears_the_echo() {
    let clean = run(|_| {}).await;
    let r = &clean.report;
    assert_eq!(
        r.packets_sent,
        3 * 300,
        "three participants, 6 s of 20 ms packets"
    );
    assert_eq!(r.packets_dropped, 0);
    assert!(
        r.packets_received >= 280,
        "{} packets from the daemon",
        r.packets_received
    );
    assert_eq!(r.packets_missing, 0);
    assert_eq!(clean.stream["streams"], 3);
    assert!(
        r.round_trips.len() >= 3,
        "spurts heard back: {:?} of {}",
        r.round_trips,
        r.onsets_sent
    );
    assert!(
        r.round_trips
            .iter()
            .all(|rt| *rt < Duration::from_millis(300)),
        "{:?}",
        r.round_trips
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_jitter_and_drift_move_the_statistics_the_expected_way() {
    let clean = run(|_| {}).await;
    let lossy = run(|o| o.loss = 0.15).await;
    let jittery = run(|o| o.jitter = Duration::from_millis(80)).await;
    let fast = run(|o| o.drift_ppm = 20_000.0).await;
    // Loss: the options dropped packets and the daemon concealed more.
    assert!(
        lossy.report.packets_dropped > 100,
        "{}",
        lossy.report.packets_dropped
    );
    assert!(
        lossy.stream["concealed"].as_u64() > clean.stream["concealed"].as_u64(),
        "{} vs {}",
        lossy.stream,
        clean.stream
    );
    // Jitter: packets arrive out of order and the jitter buffer holds more.
    assert!(
        jittery.stream["reordered"].as_u64().unwrap() + jittery.stream["late"].as_u64().unwrap()
            > 0,
        "{}",
        jittery.stream
    );
    assert!(
        jittery.stream["targetDelayMs"].as_u64() > clean.stream["targetDelayMs"].as_u64(),
        "{} vs {}",
        jittery.stream,
        clean.stream
    );
    // A 2 % fast sender clock (120 ms over 6 s) makes the buffer shed frames to stay bounded.
    assert!(
        fast.stream["accelerated"].as_u64() > clean.stream["accelerated"].as_u64(),
        "{} vs {}",
        fast.stream,
        clean.stream
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_edge_multiplexes_sessions_on_one_connection() {
    let _serial = SERIAL.lock().await;
    let (daemon, sessions) = daemon_with_sessions(5).await;
    let targets: Vec<EdgeTarget> = sessions.into_iter().map(|(_, target)| target).collect();
    let http = reqwest::Client::new();
    let counters = Arc::new(mediaproc_callsim::load::LoadCounters::default());
    let trust = ServerTrust::PinnedSha256(parse_fingerprint(&daemon.certificate_sha256).unwrap());
    let calls: Vec<_> = targets
        .into_iter()
        .map(|target| mediaproc_callsim::load::LoadCall { target, rtp: None })
        .collect();
    let report = mediaproc_callsim::load::run_load(
        mediaproc_callsim::load::LoadTransport::Quic {
            trust,
            calls_per_connection: 5,
        },
        &calls,
        Duration::from_secs(2),
        counters.clone(),
    )
    .await
    .unwrap();
    // The probe calls' tone bursts come back: one round trip a second each.
    assert!(!report.rtt_ms.is_empty(), "no echo round trip measured");
    let sent = counters.sent.load(std::sync::atomic::Ordering::Relaxed);
    let received = counters.received.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 5 * 100, "five calls, 2 s of 20 ms packets each");
    // Every call's echo comes back on its own flow (a few packets are still in flight at the end).
    assert!(received >= 5 * 90, "{received} packets back");
    let health: Value = http
        .get(format!("http://{}/healthz", daemon.api_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["sessions"], 5);
    daemon.shutdown().await;
}
