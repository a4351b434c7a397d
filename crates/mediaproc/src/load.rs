//! `mediaproc load`: many calls through one in-process daemon, measured by the daemon's own workers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mediaproc_blob::MediaSessionConfig;
use mediaproc_callsim::edge::EdgeTarget;
use mediaproc_callsim::load::{LoadCounters, run_load};
use mediaproc_daemon::Config;
use mediaproc_net::{ServerTrust, parse_fingerprint};
use serde_json::{Value, json};

use crate::{Failure, LoadArgs, output};

/// Calls multiplexed on one edge connection (below the media endpoint's per-connection limit).
const SESSIONS_PER_CONNECTION: usize = 200;

pub fn run(args: &LoadArgs) -> Result<(), Failure> {
    if args.sessions == 0 || args.sessions > 2000 {
        return Err(Failure::usage("--sessions must be 1 to 2000"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(load(args))
}

async fn load(args: &LoadArgs) -> Result<(), Failure> {
    let fail = |what: &str, err: String| Failure::invalid(format!("{what}: {err}"));
    let token = format!("load-{}", uuid::Uuid::new_v4().simple());
    let daemon = mediaproc_daemon::start(Config {
        api: ([127, 0, 0, 1], 0).into(),
        media: ([127, 0, 0, 1], 0).into(),
        api_token: Some(token.clone()),
        workers: args.workers,
        max_sessions: args.sessions + 10,
        // Measure, do not refuse: the thresholds only colour /healthz here.
        overloaded_at: 0.99,
        heavily_loaded_at: 0.7,
        ..Config::default()
    })
    .await
    .map_err(|err| fail("daemon", err.to_string()))?;
    let http = reqwest::Client::new();
    let bot = if args.bot == "echo" {
        json!("echo")
    } else {
        json!("websocket")
    };
    let mut targets = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let session: Value = http
            .post(format!("http://{}/v1/sessions", daemon.api_addr))
            .bearer_auth(&token)
            .json(&json!({"bot": bot}))
            .send()
            .await
            .map_err(|err| fail("create session", err.to_string()))?
            .json()
            .await
            .map_err(|err| fail("create session", err.to_string()))?;
        let blob = MediaSessionConfig::from_blob(session["blob"].as_str().unwrap_or_default())
            .map_err(|err| fail("blob", err.to_string()))?;
        targets.push(
            EdgeTarget::from_blob(&blob)
                .await
                .map_err(|err| fail("blob", err.to_string()))?,
        );
    }
    let (Some(first), Some(fingerprint)) = (
        targets.first(),
        parse_fingerprint(&daemon.certificate_sha256),
    ) else {
        return Err(Failure::invalid("no session or no certificate fingerprint"));
    };
    let (server, server_name) = (first.server, first.server_name.clone());
    output::line(&format!(
        "load         {} sessions ({} bot), {} QUIC connection(s), {} s, {} worker thread(s)",
        args.sessions,
        args.sessions.div_ceil(SESSIONS_PER_CONNECTION),
        args.bot,
        args.seconds,
        daemon_workers(&http, &daemon).await
    ));
    let counters = Arc::new(LoadCounters::default());
    // One connection per SESSIONS_PER_CONNECTION calls (the media endpoint limits sessions per connection).
    let duration = Duration::from_secs(args.seconds);
    let edges: Vec<_> = targets
        .chunks(SESSIONS_PER_CONNECTION)
        .map(|chunk| {
            let (chunk, counters, name) = (chunk.to_vec(), counters.clone(), server_name.clone());
            tokio::spawn(async move {
                run_load(
                    server,
                    &name,
                    ServerTrust::PinnedSha256(fingerprint),
                    &chunk,
                    duration,
                    counters,
                )
                .await
            })
        })
        .collect();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let (mut peak_load, mut load_sum, mut samples) = (0.0f64, 0.0f64, 0u32);
    let mut last = (0u64, 0u64);
    let mut health = Value::Null;
    while edges.iter().any(|edge| !edge.is_finished()) {
        second.tick().await;
        health = http
            .get(format!("http://{}/healthz", daemon.api_addr))
            .send()
            .await
            .map_err(|err| fail("healthz", err.to_string()))?
            .json()
            .await
            .unwrap_or(Value::Null);
        let loads: Vec<f64> = health["workerLoad"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        let worst = loads.iter().copied().fold(0.0, f64::max);
        if samples > 0 {
            // The first second holds the sessions' start-up; it is shown but not counted.
            peak_load = peak_load.max(worst);
            load_sum += loads.iter().sum::<f64>() / loads.len().max(1) as f64;
        }
        samples += 1;
        let (sent, received) = (
            counters.sent.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
        );
        output::line(&format!(
            "{:>4} s       in {:>6} pkt/s  out {:>6} pkt/s  worker load {}  {}  late ticks {}",
            samples,
            sent - last.0,
            received - last.1,
            loads
                .iter()
                .map(|l| format!("{:.0} %", l * 100.0))
                .collect::<Vec<_>>()
                .join(" / "),
            health["status"].as_str().unwrap_or("?"),
            health["lateTicks"],
        ));
        last = (sent, received);
    }
    for edge in edges {
        edge.await
            .map_err(|err| fail("load edge", err.to_string()))?
            .map_err(|err| fail("load edge", err.to_string()))?;
    }
    daemon.shutdown().await;
    let expected = args.sessions as u64 * args.seconds * 50;
    let counted = samples.saturating_sub(1).max(1);
    output::line("");
    output::line("summary");
    output::line(&format!(
        "  sessions             {} ({} bot), {} s",
        args.sessions, args.bot, args.seconds
    ));
    output::line(&format!(
        "  packets              {} sent of {expected}, {} send errors, {} received from the daemon",
        counters.sent.load(Ordering::Relaxed),
        counters.send_errors.load(Ordering::Relaxed),
        counters.received.load(Ordering::Relaxed)
    ));
    output::line(&format!(
        "  worker load          mean {:.1} %, peak {:.1} % (share of wall time a media worker spends working)",
        load_sum / f64::from(counted) * 100.0,
        peak_load * 100.0
    ));
    output::line(&format!("  late ticks           {}", health["lateTicks"]));
    Ok(())
}

async fn daemon_workers(
    http: &reqwest::Client,
    daemon: &mediaproc_daemon::RunningDaemon,
) -> String {
    match http
        .get(format!("http://{}/healthz", daemon.api_addr))
        .send()
        .await
    {
        Ok(response) => response
            .json::<Value>()
            .await
            .map_or("?".into(), |h| h["workers"].to_string()),
        Err(_) => "?".into(),
    }
}
