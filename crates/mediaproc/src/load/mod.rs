//! `mediaproc load`: N calls against a `mediaproc serve` in its own process (started here, or `--api`), from a load
//! edge in this process (`--edge quic|rtp`, `--calls-per-connection K`), answered by a built-in bot or by
//! out-of-process WebSocket echo bots this tool drives. What is measured is the daemon's own CPU time (its threads,
//! from `/proc`) per call-tick, next to bare libopus doing the same codec work in the same run.
//!
//! Phases: start the daemon → measure the bare codec → create the sessions (and connect the bots) → stream for
//! `--seconds`, printing a line a second; the first [`WARMUP_SECONDS`] are start-up (shown, not measured) → read
//! every session's statistics → report (a table; `--json FILE` for the keys in `docs/performance.md`).

mod bare;
mod bots;
mod capacity;
mod daemon;
mod peers;
mod report;
mod stall;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mediaproc_blob::MediaSessionConfig;
use mediaproc_callsim::edge::{EdgeTarget, OPUS_PAYLOAD_TYPE};
use mediaproc_callsim::load::{LoadCall, LoadCounters, LoadTransport, rtp_socket, run_load};
use mediaproc_net::{ServerTrust, parse_fingerprint};
use serde_json::{Value, json};

use crate::{Failure, LoadArgs, output};
use daemon::{Daemon, Spawn};
use report::{Measured, StreamTotals};

/// Seconds at the start of a run that are shown but not measured (sessions starting, buffers filling).
const WARMUP_SECONDS: u64 = 2;
/// Largest run.
const MAX_CALLS: usize = 2000;
/// Set by `--find-capacity`: runs print no per-second progress (each prints one line of its own).
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn run(args: &LoadArgs) -> Result<(), Failure> {
    if args.calls == 0 || args.calls > MAX_CALLS {
        return Err(Failure::usage(format!("--calls must be 1 to {MAX_CALLS}")));
    }
    if args.seconds <= WARMUP_SECONDS {
        return Err(Failure::usage(format!(
            "--seconds must be more than the {WARMUP_SECONDS} s of start-up"
        )));
    }
    if args.calls_per_connection == 0 {
        return Err(Failure::usage("--calls-per-connection must be at least 1"));
    }
    if !(0.0 < args.max_cpu && args.max_cpu <= 1.0) {
        return Err(Failure::usage(
            "--max-cpu must be a share of the cores in (0, 1]",
        ));
    }
    // Fleet (issue 12): the QUIC edge pins one daemon's certificate and multiplexes calls on one connection, so
    // calls spread over several nodes take the RTP edge (a socket per call, to its own node).
    if args.fleet && (args.api.is_none() || args.edge != "rtp" || args.peer != "mediaproc") {
        return Err(Failure::usage(
            "--fleet needs --api (any node of the fleet) and --edge rtp",
        ));
    }
    if args.find_capacity {
        return capacity::find(args);
    }
    let measured = run_once(args)?;
    measured.print();
    if let Some(path) = &args.json {
        write_json(path, &measured.json())?;
    }
    Ok(())
}

/// Call-ticks in `seconds` of `calls` calls (a tick is 20 ms).
fn call_ticks(calls: usize, seconds: f64) -> f64 {
    calls as f64 * seconds / 0.02
}

/// The share of the cores a process used in the last second, from two CPU-time readings (µs); `?` without both.
fn cpu_share_text(now_us: Option<u64>, before_us: Option<u64>, cores: usize) -> String {
    match (now_us, before_us) {
        (Some(now), Some(before)) => format!(
            "{:.0} %",
            now.saturating_sub(before) as f64 / 1e6 / cores as f64 * 100.0
        ),
        _ => "?".to_owned(),
    }
}

/// Writes a report.
fn write_json(path: &std::path::Path, value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| Failure::invalid(format!("json: {err}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|err| Failure::invalid(format!("{}: {err}", path.display())))?;
    output::line(&format!("wrote {}", path.display()));
    Ok(())
}

/// One load run: a daemon (started for it, or `--api`), the calls, the report.
fn run_once(args: &LoadArgs) -> Result<Measured, Failure> {
    if args.peer != "mediaproc" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
        return runtime.block_on(peers::run(args));
    }
    let daemon = match args.api {
        Some(api) => {
            let token = args
                .token
                .clone()
                .or_else(|| std::env::var(mediaproc_daemon::config::ENV_API_TOKEN).ok())
                .ok_or_else(|| Failure::usage("--api needs --token or MEDIAPROC_API_TOKEN"))?;
            Daemon::external(api, token, args.daemon_pid)
        }
        None => Daemon::spawn(&Spawn {
            calls: args.calls,
            workers: args.workers,
            wake_coalesce_us: args.worker_wake_coalesce_us,
            decoder_complexity: args.decoder_complexity,
        })?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
    let result = runtime.block_on(load(args, &daemon));
    daemon.stop();
    result
}

struct Session {
    id: String,
    call: LoadCall,
    media_url: String,
    bot_token: String,
}

async fn create_sessions(
    args: &LoadArgs,
    http: &reqwest::Client,
    daemon: &Daemon,
) -> Result<(Vec<Session>, Option<String>), Failure> {
    let fail = |what: &str, err: String| Failure::invalid(format!("{what}: {err}"));
    let bot = match args.bot.as_str() {
        "echo" | "record" => args.bot.as_str(),
        _ => "websocket",
    };
    let mut sessions = Vec::with_capacity(args.calls);
    let mut fingerprint = None;
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..args.calls {
        let mut body = json!({"bot": bot});
        let socket = if args.edge == "rtp" {
            let socket = rtp_socket()
                .await
                .map_err(|err| fail("RTP socket", err.to_string()))?;
            let local = socket
                .local_addr()
                .map_err(|err| fail("RTP socket", err.to_string()))?;
            // The load edge sends what the QUIC edge declares (payload type 111), so both edges carry the same
            // packets.
            body["rtp"] = json!({"remote": local.to_string(), "payloadType": OPUS_PAYLOAD_TYPE});
            Some(socket)
        } else {
            None
        };
        let response = http
            .post(format!("http://{}/v1/sessions", daemon.api))
            .bearer_auth(&daemon.token)
            .json(&body)
            .send()
            .await
            .map_err(|err| fail("create session", err.to_string()))?;
        let status = response.status();
        let session: Value = response
            .json()
            .await
            .map_err(|err| fail("create session", err.to_string()))?;
        if !status.is_success() {
            return Err(fail(
                &format!("create session {} of {}", i + 1, args.calls),
                format!("{status}: {}", session["error"]["message"]),
            ));
        }
        let blob = MediaSessionConfig::from_blob(session["blob"].as_str().unwrap_or_default())
            .map_err(|err| fail("blob", err.to_string()))?;
        let target = EdgeTarget::from_blob(&blob)
            .await
            .map_err(|err| fail("blob", err.to_string()))?;
        let rtp = match socket {
            Some(socket) => {
                let local = session["rtp"]["local"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| fail("create session", "no rtp.local in the answer".into()))?;
                Some((socket, local))
            }
            None => None,
        };
        fingerprint = session["certificateSha256"].as_str().map(str::to_owned);
        if args.fleet {
            let node = session["mpUri"].as_str().unwrap_or("?").to_owned();
            *per_node.entry(node).or_insert(0usize) += 1;
        }
        sessions.push(Session {
            id: session["sessionId"].as_str().unwrap_or_default().to_owned(),
            call: LoadCall { target, rtp },
            media_url: session["mediaUrl"].as_str().unwrap_or_default().to_owned(),
            bot_token: session["botToken"].as_str().unwrap_or_default().to_owned(),
        });
        if (i + 1) % 100 == 0 && !QUIET.load(Ordering::Relaxed) {
            output::line(&format!("  {} of {} sessions created", i + 1, args.calls));
        }
    }
    if args.fleet && !QUIET.load(Ordering::Relaxed) {
        output::line(&format!(
            "fleet        calls per node (mpUri): {per_node:?}"
        ));
    }
    Ok((sessions, fingerprint))
}

async fn health(http: &reqwest::Client, daemon: &Daemon) -> Value {
    match http
        .get(format!("http://{}/healthz", daemon.api))
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn load(args: &LoadArgs, daemon: &Daemon) -> Result<Measured, Failure> {
    let fail = |what: &str, err: String| Failure::invalid(format!("{what}: {err}"));
    let http = reqwest::Client::new();
    let first_health = health(&http, daemon).await;
    if first_health.is_null() {
        return Err(fail(
            "daemon",
            format!("no answer from http://{}/healthz", daemon.api),
        ));
    }
    let duplex = matches!(args.bot.as_str(), "echo" | "websocket");
    let bare_at =
        |c| bare::codec_us_per_call_tick(duplex, c).map_err(|err| fail("bare codec", err));
    let bare = bare_at(args.decoder_complexity)?;
    let rss_before = daemon.pid.and_then(daemon::rss_bytes);

    let (sessions, fingerprint) = create_sessions(args, &http, daemon).await?;
    let mut probe = stall::StallProbe::start();
    let bot_counters = Arc::new(bots::BotCounters::default());
    let mut bot_tasks = Vec::new();
    if args.bot == "websocket" {
        for s in &sessions {
            bot_tasks.push(
                bots::connect_echo(&s.media_url, &s.bot_token, bot_counters.clone())
                    .await
                    .map_err(|err| fail("bot", err))?,
            );
        }
    }
    let transport = if args.edge == "rtp" {
        LoadTransport::Rtp
    } else {
        let fingerprint = fingerprint
            .as_deref()
            .and_then(parse_fingerprint)
            .ok_or_else(|| fail("daemon", "no certificate fingerprint".into()))?;
        LoadTransport::Quic {
            trust: ServerTrust::PinnedSha256(fingerprint),
            calls_per_connection: args.calls_per_connection,
        }
    };
    let connections = match transport {
        LoadTransport::Quic {
            calls_per_connection,
            ..
        } => args.calls.div_ceil(calls_per_connection),
        _ => args.calls,
    };
    if !QUIET.load(Ordering::Relaxed) {
        output::line(&format!(
            "load         {} calls ({} bot) on {} ({}), {} s, daemon workers {}, bare libopus {bare:.1} µs per call-tick",
            args.calls,
            args.bot,
            args.edge,
            if args.edge == "rtp" {
                "a socket per call".to_owned()
            } else {
                format!("{connections} connection(s)")
            },
            args.seconds,
            first_health["workers"],
        ));
    }

    let counters = Arc::new(LoadCounters::default());
    let calls: Vec<LoadCall> = sessions.iter().map(|s| s.call.clone()).collect();
    let duration = Duration::from_secs(args.seconds);
    let edge = {
        let counters = counters.clone();
        tokio::spawn(async move { run_load(transport, &calls, duration, counters).await })
    };

    let cores = daemon::cores();
    let started = Instant::now();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let mut last = (0u64, 0u64, daemon.pid.and_then(daemon::cpu));
    let mut window_start = None;
    let mut window_end = None;
    let mut late_at_start = 0u64;
    let (mut lateness_start, mut lateness_end) = (Value::Null, Value::Null);
    let (mut hand_offs_start, mut hand_offs_end) = (Value::Null, Value::Null);
    let mut rss_peak = 0u64;
    for s in 1..=args.seconds {
        second.tick().await;
        let h = health(&http, daemon).await;
        let cpu = daemon.pid.and_then(daemon::cpu);
        let (sent, received) = (
            counters.sent.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
        );
        let cpu_share = cpu_share_text(
            cpu.as_ref().map(|c| c.total_us),
            last.2.as_ref().map(|c| c.total_us),
            cores,
        );
        let late = h["lateTicks"].as_u64().unwrap_or(0);
        if let Some(rss) = daemon.pid.and_then(daemon::rss_bytes) {
            rss_peak = rss_peak.max(rss);
        }
        if !QUIET.load(Ordering::Relaxed) {
            output::line(&format!(
                "{s:>4} s       in {:>6} pkt/s  out {:>6} pkt/s  daemon CPU {cpu_share} of {cores} core(s)  {}  late ticks {late}{}",
                sent - last.0,
                received - last.1,
                h["status"].as_str().unwrap_or("?"),
                if s <= WARMUP_SECONDS {
                    "  (start-up)"
                } else {
                    ""
                },
            ));
        }
        if s == WARMUP_SECONDS {
            probe.mark();
            window_start = Some((started.elapsed(), cpu.clone()));
            late_at_start = late;
            lateness_start = h["tickLateness"].clone();
            hand_offs_start = h["handOffs"].clone();
        }
        if s == args.seconds {
            window_end = Some((started.elapsed(), cpu.clone(), late));
            lateness_end = h["tickLateness"].clone();
            hand_offs_end = h["handOffs"].clone();
        }
        last = (sent, received, cpu);
    }
    let machine_stalls = probe.stop();
    let edge_report = edge
        .await
        .map_err(|err| fail("load edge", err.to_string()))?
        .map_err(|err| fail("load edge", err.to_string()))?;
    let rss_end = daemon.pid.and_then(daemon::rss_bytes);
    // Every session's statistics, then the sessions go.
    let mut totals = StreamTotals::default();
    for s in &sessions {
        if let Ok(response) = http
            .get(format!("http://{}/v1/sessions/{}", daemon.api, s.id))
            .bearer_auth(&daemon.token)
            .send()
            .await
            && let Ok(body) = response.json::<Value>().await
        {
            totals.add(&body["stats"]);
        }
        let _ = http
            .delete(format!("http://{}/v1/sessions/{}", daemon.api, s.id))
            .bearer_auth(&daemon.token)
            .send()
            .await;
    }
    for task in bot_tasks {
        task.abort();
    }
    // The baseline again, now that the calls are done: the smaller of the two is libopus on a quiet machine. If the
    // daemon shed its decoders' neural stages under this load, the baseline runs at the level its sessions ended at
    // (the ratio then compares like with like; the report says which level).
    let level = totals.decoder_complexity.unwrap_or(args.decoder_complexity);
    let first = if level == args.decoder_complexity {
        bare
    } else {
        bare_at(level)?
    };
    let bare = first.min(bare_at(level)?);

    let (daemon_cpu_us_per_call_tick, cpu_by_thread, window_s, late_ticks) =
        match (window_start, window_end) {
            (Some((t0, Some(c0))), Some((t1, Some(c1), late1))) => {
                let secs = (t1 - t0).as_secs_f64();
                let call_ticks = call_ticks(args.calls, secs);
                let by_thread = c1
                    .by_name
                    .iter()
                    .map(|(name, us)| {
                        let before = c0
                            .by_name
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(0, |(_, b)| *b);
                        (name.clone(), us.saturating_sub(before) as f64 / call_ticks)
                    })
                    .filter(|(_, us)| *us > 0.0)
                    .collect();
                (
                    Some((c1.total_us - c0.total_us) as f64 / call_ticks),
                    by_thread,
                    secs,
                    Some(late1.saturating_sub(late_at_start)),
                )
            }
            (_, Some((_, _, late1))) => (
                None,
                Vec::new(),
                0.0,
                Some(late1.saturating_sub(late_at_start)),
            ),
            _ => (None, Vec::new(), 0.0, None),
        };
    let lateness = report::Lateness::between(&lateness_start, &lateness_end);
    let measured = Measured {
        calls: args.calls,
        seconds: args.seconds,
        bot: args.bot.clone(),
        edge: args.edge.clone(),
        peer: "mediaproc".to_owned(),
        calls_per_connection: if args.edge == "rtp" {
            1
        } else {
            args.calls_per_connection
        },
        cores,
        window_s,
        daemon_cpu_us_per_call_tick,
        cpu_by_thread,
        bare_codec_us_per_call_tick: bare,
        decoder_complexity: level,
        machine_stalls,
        // Ticks more than 5 ms late (the daemon's own `lateTicks` counts those a whole frame late).
        late_ticks: lateness.over_5ms.or(late_ticks),
        lateness,
        packet_to_worker: report::Lateness::between(
            &hand_offs_start["packetToWorker"],
            &hand_offs_end["packetToWorker"],
        ),
        tick_to_bot: report::Lateness::between(
            &hand_offs_start["tickToBot"],
            &hand_offs_end["tickToBot"],
        ),
        bot_to_sent: report::Lateness::between(
            &hand_offs_start["botToSent"],
            &hand_offs_end["botToSent"],
        ),
        rtt_ms: edge_report.rtt_ms,
        sent: counters.sent.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
        send_errors: counters.send_errors.load(Ordering::Relaxed),
        totals,
        memory_per_call_bytes: match (rss_before, rss_end.map(|r| r.max(rss_peak))) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) / args.calls as u64),
            _ => None,
        },
        bots_echoed: bot_counters.echoed.load(Ordering::Relaxed),
        bots_failed: bot_counters.failed.load(Ordering::Relaxed),
    };
    Ok(measured)
}
