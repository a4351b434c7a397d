//! `mediaproc demo`: the whole flow on one machine — the daemon, the Graph emulator with its media edge, and a bot
//! that does what a real one does: ask the daemon for a session, post the create-call body with the blob to
//! (emulated) Graph, take the notifications on its callback, and let the edge connect to mpUri.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use mediaproc_blob::{CallRequestSpec, MediaChoice, MeetingSpec, Modality, Party, Scenario};
use mediaproc_callsim::edge::EdgeOptions;
use mediaproc_callsim::graph::{self, GraphConfig};
use mediaproc_daemon::Config;
use mediaproc_net::{ServerTrust, parse_fingerprint};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{DemoArgs, Failure, output};

pub fn run(args: &DemoArgs) -> Result<(), Failure> {
    if !(0.0..1.0).contains(&args.loss) {
        return Err(Failure::usage(
            "--loss is a probability from 0.0 to below 1.0",
        ));
    }
    if args.participants == 0 || args.participants > 16 {
        return Err(Failure::usage("--participants must be 1 to 16"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(demo(args))
}

/// `demo --browser`: the daemon alone, with its talk page; a person is the far end.
async fn browser(args: &DemoArgs) -> Result<(), Failure> {
    let daemon = mediaproc_daemon::start(Config {
        api: std::net::SocketAddr::from(([127, 0, 0, 1], args.port)),
        media: "127.0.0.1:0"
            .parse()
            .map_err(|e| Failure::invalid(format!("{e}")))?,
        api_token: Some(format!("demo-{}", uuid::Uuid::new_v4().simple())),
        recordings_dir: args.recordings.clone(),
        talk_page: true,
        ..Config::default()
    })
    .await
    .map_err(|err| fail("daemon")(err.to_string()))?;
    output::line(
        "open this page in Chrome or Chromium (Firefox needs a non-loopback address, see docs/webrtc.md), pick a bot, allow the microphone, talk:",
    );
    output::line(&format!("  {}", daemon.talk_url().unwrap_or_default()));
    output::line("Ctrl-C ends the demo.");
    crate::serve::shutdown_signal().await;
    daemon.shutdown().await;
    Ok(())
}

fn fail(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |err| Failure::invalid(format!("{what}: {err}"))
}

async fn demo(args: &DemoArgs) -> Result<(), Failure> {
    if args.browser {
        return browser(args).await;
    }
    let recordings_voices = load_recordings(&args.wav)?;
    let api_token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let recordings = args.recordings.clone();
    let daemon = mediaproc_daemon::start(Config {
        api: "127.0.0.1:0"
            .parse()
            .map_err(|e| Failure::invalid(format!("{e}")))?,
        media: "127.0.0.1:0"
            .parse()
            .map_err(|e| Failure::invalid(format!("{e}")))?,
        api_token: Some(api_token.clone()),
        recordings_dir: recordings.clone(),
        ..Config::default()
    })
    .await
    .map_err(|err| fail("daemon")(err.to_string()))?;
    output::line(&format!(
        "daemon       control API http://{}  mpUri {}",
        daemon.api_addr, daemon.mp_uri
    ));

    // The bot's callback endpoint: Graph posts notifications here.
    let (notes_tx, mut notes) = mpsc::channel::<Value>(64);
    let callback = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("callback")(e.to_string()))?;
    let callback_url = format!(
        "http://{}/callback",
        callback
            .local_addr()
            .map_err(|e| fail("callback")(e.to_string()))?
    );
    let app = axum::Router::new()
        .route(
            "/callback",
            post(
                |State(tx): State<mpsc::Sender<Value>>, Json(body): Json<Value>| async move {
                    let _ = tx.send(body).await;
                    axum::http::StatusCode::ACCEPTED
                },
            ),
        )
        .with_state(notes_tx);
    let callback_server = tokio::spawn(async move {
        let _ = axum::serve(callback, app).await;
    });

    let fingerprint = parse_fingerprint(&daemon.certificate_sha256)
        .ok_or_else(|| Failure::invalid("bad fingerprint"))?;
    let mut edge = EdgeOptions::new(
        ServerTrust::PinnedSha256(fingerprint),
        Duration::from_secs(args.seconds),
    );
    edge.participants = args.participants;
    edge.loss = args.loss;
    edge.jitter = Duration::from_millis(args.jitter_ms);
    edge.drift_ppm = args.drift_ppm;
    edge.recordings = recordings_voices;
    let graph_token = format!("graph-{}", uuid::Uuid::new_v4().simple());
    let graph = graph::start(GraphConfig::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|e| Failure::invalid(format!("{e}")))?,
        graph_token.clone(),
        Some(edge),
    ))
    .await
    .map_err(|err| fail("graph emulator")(err.to_string()))?;
    output::line(&format!(
        "graph        emulated Graph at http://{}/v1.0/app/calls",
        graph.addr
    ));

    // 1. The bot asks the daemon for a media session.
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("http://{}/v1/sessions", daemon.api_addr))
        .bearer_auth(&api_token)
        .json(&json!({"bot": args.bot.as_str(), "audio": {"unmixed": args.bot == "record"}}))
        .send()
        .await
        .map_err(|e| fail("create session")(e.to_string()))?
        .json()
        .await
        .map_err(|e| fail("create session")(e.to_string()))?;
    let session_id = session["sessionId"]
        .as_str()
        .ok_or_else(|| Failure::invalid(format!("no session: {session}")))?
        .to_owned();
    output::line(&format!(
        "bot          session {session_id} ({} bot); blob for mpUri {}",
        args.bot,
        session["mpUri"].as_str().unwrap_or("?")
    ));

    if args.bot == "websocket" {
        let url = format!(
            "{}?token={}",
            session["mediaUrl"].as_str().unwrap_or(""),
            session["botToken"].as_str().unwrap_or("")
        );
        output::line("bot          waiting for your bot to connect, e.g.:");
        output::line(&format!(
            "               python3 examples/python/echo_bot.py --media-url '{url}' --seconds {}",
            args.seconds + 5
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let stats = session_stats(&http, &daemon, &api_token, &session_id).await;
            if stats["stats"]["botConnected"] == true {
                output::line("bot          connected");
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Failure::invalid("no bot connected within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // 2. The bot creates the call with the blob, exactly as it would against Graph.
    let body = CallRequestSpec {
        scenario: Scenario::ScheduledMeeting,
        callback_uri: callback_url,
        media: MediaChoice::AppHosted {
            blob: session["blob"].as_str().unwrap_or_default().to_owned(),
        },
        modalities: vec![Modality::Audio],
        targets: Vec::new(),
        meeting: Some(MeetingSpec {
            thread_id: "19:meeting_mediaprocDemo@thread.v2".into(),
            message_id: "0".into(),
            organizer: Party {
                id: uuid::Uuid::new_v4().to_string(),
                display_name: Some("Organizer".into()),
                tenant_id: None,
            },
            allow_conversation_without_host: true,
        }),
        guest: None,
    }
    .build();
    let response = http
        .post(format!("http://{}/v1.0/app/calls", graph.addr))
        .bearer_auth(&graph_token)
        .json(&body)
        .send()
        .await
        .map_err(|e| fail("create call")(e.to_string()))?;
    let status = response.status();
    let call: Value = response
        .json()
        .await
        .map_err(|e| fail("create call")(e.to_string()))?;
    if status.as_u16() != 201 {
        return Err(Failure::invalid(format!(
            "Graph refused the call ({status}): {call}"
        )));
    }
    let call_id = call["id"].as_str().unwrap_or_default().to_owned();
    output::line(&format!(
        "graph        201 Created: call {call_id}, state {}",
        call["state"].as_str().unwrap_or("?")
    ));

    // 3. Follow the call: notifications as they come, a progress line per second.
    let live = graph.emulator.edge_live(&call_id);
    let started = tokio::time::Instant::now();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let total = Duration::from_secs(args.seconds) + Duration::from_millis(800);
    while started.elapsed() < total {
        tokio::select! {
            Some(note) = notes.recv() => output::line(&describe(&note)),
            _ = second.tick() => {
                let stats = session_stats(&http, &daemon, &api_token, &session_id).await;
                let s = &stats["stats"];
                let jitter = s["streams"].as_array().and_then(|streams| {
                    streams.iter().map(|st| st["jitterBufferDelayMs"].as_u64().unwrap_or(0)).max()
                });
                let (sent, received, rtt) = live.as_ref().map_or((0, 0, 0), |l| {
                    (l.packets_sent.load(Ordering::Relaxed), l.packets_received.load(Ordering::Relaxed), l.last_round_trip_us.load(Ordering::Relaxed))
                });
                output::line(&format!(
                    "{:>4} s       {} participants  edge→daemon {sent} pkts  daemon→edge {received} pkts  jitter buffer {} ms  echo rtt {}",
                    started.elapsed().as_secs(),
                    stats["participants"].as_array().map_or(0, Vec::len),
                    jitter.map_or("-".to_owned(), |j| j.to_string()),
                    if rtt == 0 { "-".to_owned() } else { format!("{:.0} ms", rtt as f64 / 1000.0) },
                ));
            }
        }
    }
    let mut report = None;
    for _ in 0..50 {
        report = graph.emulator.edge_report(&call_id);
        if report.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let final_stats = session_stats(&http, &daemon, &api_token, &session_id).await;

    // 4. Hang up: the bot deletes the call at Graph, then its media session.
    let _ = http
        .delete(format!("http://{}/v1.0/app/calls/{call_id}", graph.addr))
        .bearer_auth(&graph_token)
        .send()
        .await;
    if let Ok(Some(note)) = tokio::time::timeout(Duration::from_secs(2), notes.recv()).await {
        output::line(&describe(&note));
    }
    let _ = http
        .delete(format!(
            "http://{}/v1/sessions/{session_id}",
            daemon.api_addr
        ))
        .bearer_auth(&api_token)
        .send()
        .await;
    daemon.shutdown().await;
    graph.stop();
    callback_server.abort();

    summary(args, report.as_ref(), &final_stats, &session_id);
    Ok(())
}

/// Loads `--wav` files as voices (mono 16 kHz).
pub fn load_recordings(
    paths: &[std::path::PathBuf],
) -> Result<Vec<std::sync::Arc<[i16]>>, Failure> {
    paths
        .iter()
        .map(|path| {
            mediaproc_callsim::voice::load_wav(path)
                .map_err(|err| Failure::usage(format!("--wav: {err}")))
        })
        .collect()
}

async fn session_stats(
    http: &reqwest::Client,
    daemon: &mediaproc_daemon::RunningDaemon,
    token: &str,
    id: &str,
) -> Value {
    let response = http
        .get(format!("http://{}/v1/sessions/{id}", daemon.api_addr))
        .bearer_auth(token)
        .send()
        .await;
    match response {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// One line for a notification.
fn describe(note: &Value) -> String {
    let Some(n) = note["value"].get(0) else {
        return format!("callback     {note}");
    };
    let data = &n["resourceData"];
    match data {
        Value::Array(list) => {
            let lobby = list.iter().filter(|p| p["isInLobby"] == true).count();
            format!(
                "callback     roster: {} participants{}",
                list.len(),
                if lobby > 0 {
                    format!(", {lobby} in the lobby")
                } else {
                    String::new()
                }
            )
        }
        _ => format!(
            "callback     call {} ({})",
            data["state"].as_str().unwrap_or("?"),
            n["changeType"].as_str().unwrap_or("?")
        ),
    }
}

fn summary(
    args: &DemoArgs,
    report: Option<&mediaproc_callsim::edge::EdgeReport>,
    stats: &Value,
    session_id: &str,
) {
    let s = &stats["stats"];
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    output::line("");
    output::line("summary");
    output::line(&format!(
        "  call                 {} s, {} participants taking turns, bot {}",
        args.seconds, args.participants, args.bot
    ));
    output::line(&format!(
        "  network options      loss {:.1} %, jitter {} ms, drift {} ppm",
        args.loss * 100.0,
        args.jitter_ms,
        args.drift_ppm
    ));
    if let Some(r) = report {
        output::line(&format!(
            "  edge → daemon        {} packets sent, {} dropped by the loss option",
            r.packets_sent, r.packets_dropped
        ));
        output::line(&format!(
            "  daemon → edge        {} packets received, {} missing, {} frames concealed by the edge",
            r.packets_received, r.packets_missing, r.frames_concealed
        ));
        output::line(&format!(
            "  arrival jitter       {:.2} ms at the edge",
            r.jitter_us / 1000.0
        ));
        if args.bot == "echo" || args.bot == "websocket" {
            output::line(&format!(
                "  echo round trip      p50 {}  p99 {}  ({} of {} talk spurts heard back; edge send → echo received, jitter buffer included)",
                ms(r.round_trip_quantile(0.5)),
                ms(r.round_trip_quantile(0.99)),
                r.round_trips.len(),
                r.onsets_sent
            ));
        }
    } else {
        output::line("  edge                 no report (the media edge did not finish)");
    }
    let streams = s["streams"].as_array().cloned().unwrap_or_default();
    let concealed: u64 = streams
        .iter()
        .map(|st| st["concealed"].as_u64().unwrap_or(0))
        .sum();
    let delay = streams
        .iter()
        .map(|st| st["jitterBufferDelayMs"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    output::line(&format!(
        "  daemon               {} packets in, {} sent, {} frames concealed, jitter buffer {} ms, {} late ticks",
        s["packetsReceived"], s["packetsSent"], concealed, delay, s["lateTicks"]
    ));
    if args.bot == "record" {
        output::line(&format!(
            "  recordings           {}/{session_id}-mixed.wav (and one file per speaker)",
            args.recordings.display()
        ));
    }
}
