//! Hostile peers and bots against the daemon, over real sockets on loopback: slow-header HTTP clients, a
//! connection flood past the cap, a body that never comes, concurrent session creation at the limit, a WebSocket
//! bot that stops reading, recordings at their caps, `play` paths outside the media directory and a FIFO inside
//! it. Each test asserts the defended behaviour by conditions (counters, answers, closed sockets), and where a
//! healthy session runs beside the attack, that its echo still correlates with what was spoken.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mediaproc_daemon::{Config, RunningDaemon};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit` saying what was awaited.
async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One raw HTTP/1.1 request on a new connection; returns the status, the body and how long the answer took.
async fn raw_request(daemon: &RunningDaemon, request: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(daemon.api_addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the daemon answered within 10 s")
        .unwrap();
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, elapsed)
}

async fn healthz(daemon: &RunningDaemon) -> (u16, Duration) {
    let (status, _, elapsed) = raw_request(
        daemon,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    (status, elapsed)
}

/// A healthy session: an echo bot and an edge attached to it.
async fn healthy_echo(daemon: &RunningDaemon) -> Edge {
    let session = create_session(daemon, json!({"bot": "echo"})).await;
    connect_edge(daemon, &session).await.unwrap()
}

/// Speaks 2 s of speech into the healthy session and asserts the echo is as close to it as two Opus generations
/// allow (the bar of the echo tests).
async fn assert_echo_flows(edge: &Edge, what: &str) {
    let source = speech(16_000 * 2, 16_000);
    let received =
        talk_and_listen(edge, &opus_packets(&source, 77), Duration::from_millis(600)).await;
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    println!("{what}: healthy echo windowed correlation {windowed:.3} (ceiling {ceiling:.3})");
    assert!(
        windowed > 0.8 * ceiling,
        "{what}: the healthy session's echo suffered: {windowed:.3} vs ceiling {ceiling:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_do_not_stop_healthz_and_are_closed_at_the_header_timeout() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-slow");
    let daemon = mediaproc_daemon::start(Config {
        http_header_timeout_ms: 3_000,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    let edge = healthy_echo(&daemon).await;

    // 500 clients that start a request line and never finish it.
    let opened = Instant::now();
    let mut slow = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut stream = TcpStream::connect(daemon.api_addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: sl")
            .await
            .unwrap();
        slow.push(stream);
    }
    let all_open = opened.elapsed();
    println!("500 slow-header connections open in {all_open:?}");

    // While they hang, /healthz answers on a new connection within 100 ms, again and again, and the healthy
    // session's audio goes on.
    let probes = async {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let (status, elapsed) = healthz(&daemon).await;
            assert_eq!(status, 200);
            worst = worst.max(elapsed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    };
    let (worst, ()) = tokio::join!(probes, assert_echo_flows(&edge, "slow headers"));
    println!("/healthz beside 500 slow-header connections: slowest of 20 answers {worst:?}");
    assert!(
        worst < Duration::from_millis(100),
        "slowest /healthz {worst:?}"
    );

    // Each slow connection is closed by the daemon once its headers are overdue.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        for stream in &mut slow {
            let mut buf = [0u8; 256];
            // EOF (or a reset) is the close; hyper may write nothing first.
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await;
    assert!(closed.is_ok(), "slow-header connections were not closed");
    let closed_after = opened.elapsed();
    println!("all 500 closed {closed_after:?} after the first opened (header timeout 3 s)");
    assert!(closed_after >= Duration::from_millis(3_000) - all_open);
    let text = metrics(&daemon).await;
    assert!(
        metric(&text, "mediaproc_http_header_timeouts_total") >= 500,
        "{text}"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_counted() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-cap");
    let daemon = mediaproc_daemon::start(Config {
        http_max_connections: 32,
        http_header_timeout_ms: 1_000,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    let mut hogs = Vec::new();
    for _ in 0..32 {
        let mut stream = TcpStream::connect(daemon.api_addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        hogs.push(stream);
    }
    // The 33rd is closed at accept, without an answer.
    let mut extra = TcpStream::connect(daemon.api_addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the cap was served: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Once the hogs' headers are overdue their slots come back and the API answers again.
    wait_until(
        Duration::from_secs(5),
        "the API to answer again",
        || async {
            let mut stream = TcpStream::connect(daemon.api_addr).await.ok()?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            answer.starts_with(b"HTTP/1.1 200").then_some(())
        },
    )
    .await;
    let text = metrics(&daemon).await;
    assert!(
        metric(&text, "mediaproc_http_connections_refused_total") >= 1,
        "{text}"
    );
    drop(hogs);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_and_a_body_that_never_comes_times_out() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-body");
    let daemon = mediaproc_daemon::start(Config {
        http_body_timeout_ms: 500,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    // No token, a body announced and never sent: refused at once, the body not waited for.
    let (status, body, elapsed) = raw_request(
        &daemon,
        "POST /v1/sessions HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    assert!(elapsed < Duration::from_millis(400), "{elapsed:?}");
    // With the token, a body that never comes is given up after the body timeout.
    let (status, body, elapsed) = raw_request(
        &daemon,
        &format!(
            "POST /v1/sessions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\
             Connection: close\r\n\r\n{{\"bot\":"
        ),
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_timeout"), "{body}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_never_overshoot_max_sessions() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-max");
    let daemon = mediaproc_daemon::start(Config {
        max_sessions: 5,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    for round in 0..3 {
        // 40 creations at once, each on its own connection; exactly the free slots succeed.
        let posts = (0..40).map(|_| async {
            let response = reqwest::Client::new()
                .post(format!("http://{}/v1/sessions", daemon.api_addr))
                .bearer_auth(TOKEN)
                // An RTP edge makes creation await a socket bind, widening the window a racy check would lose.
                .json(&json!({"bot": "echo", "rtp": {}}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
        let answers = futures_util::future::join_all(posts).await;
        let created: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == 201)
            .map(|(_, body)| body)
            .collect();
        for (status, body) in &answers {
            assert!(
                *status == 201 || (*status == 503 && body["error"]["code"] == "too_many_sessions"),
                "{status} {body}"
            );
        }
        let health: Value = http()
            .get(format!("http://{}/healthz", daemon.api_addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        println!("round {round}: {} of 40 created", created.len());
        assert_eq!(created.len(), 5, "round {round}");
        assert_eq!(health["sessions"], 5, "{health}");
        // Free every slot (deleting concurrently too) for the next round.
        let deletes = created.iter().map(|body| async {
            http()
                .delete(format!(
                    "http://{}/v1/sessions/{}",
                    daemon.api_addr,
                    body["sessionId"].as_str().unwrap()
                ))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        let statuses = futures_util::future::join_all(deletes).await;
        assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    }
    let text = metrics(&daemon).await;
    assert_eq!(metric(&text, "mediaproc_sessions_refused_full_total"), 105);
    assert_eq!(metric(&text, "mediaproc_sessions"), 0);
    daemon.shutdown().await;
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket bot on a socket with a small receive buffer, so that not reading fills it quickly.
async fn stalling_bot(session: &Value) -> Socket {
    let url = format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    );
    let addr = url
        .strip_prefix("ws://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    socket
}

/// A config whose bot connections have small kernel send buffers (so a stall shows within a second or two).
fn stall_config(dir: &std::path::Path, write_timeout_ms: u64) -> Config {
    Config {
        ws_write_timeout_ms: write_timeout_ms,
        http_send_buffer_bytes: 4096,
        // Pings far apart, so this test sees the write timeout, not the pong timeout.
        ws_ping_interval_ms: 600_000,
        ..test_config(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_bot_that_stops_reading_is_disconnected_at_the_write_timeout() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-stall");
    let daemon = mediaproc_daemon::start(stall_config(&dir, 500))
        .await
        .unwrap();
    let healthy = healthy_echo(&daemon).await;
    let session = create_session(&daemon, json!({})).await;
    // The stalled session has an edge too, so there is audio for its bot.
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let source = speech(16_000 * 4, 16_000);
    let packets = opus_packets(&source, 5);
    let connected = Instant::now();
    let bot = stalling_bot(&session).await;
    let stalled = async {
        talk_and_listen(&edge, &packets, Duration::ZERO).await;
    };
    let detected = async {
        wait_until(
            Duration::from_secs(20),
            "the stall to be counted",
            || async {
                let stats = session_stats(&daemon, &session).await;
                (stats["stats"]["websocket"]["stalls"] == 1).then(|| (stats, connected.elapsed()))
            },
        )
        .await
    };
    let ((), (stats, after), ()) = tokio::join!(
        stalled,
        detected,
        assert_echo_flows(&healthy, "stalled bot")
    );
    println!("stalled bot disconnected {after:?} after it connected (write timeout 500 ms)");
    assert!(after >= Duration::from_millis(500), "{after:?}");
    // The write timeout, plus the time the first audio takes to arrive and to fill the small socket buffers
    // (measured: about 0.9 s in all).
    assert!(after < Duration::from_secs(3), "{after:?}");
    assert_eq!(stats["stats"]["websocket"]["disconnects"], 1, "{stats}");
    assert_eq!(stats["notices"][0]["event"], "botStalled", "{stats}");
    // The session's audio kept ticking, and its port is free again: a bot can reconnect.
    let ticks = stats["stats"]["ticks"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the session to keep ticking",
        || async {
            let now = session_stats(&daemon, &session).await;
            (now["stats"]["ticks"].as_u64().unwrap() > ticks + 25).then_some(())
        },
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "the bot port to come back",
        || async {
            let now = session_stats(&daemon, &session).await;
            (now["stats"]["botConnected"] == false).then_some(())
        },
    )
    .await;
    let (_again, _) = tokio_tungstenite::connect_async(format!(
        "{}?token={}",
        session["mediaUrl"].as_str().unwrap(),
        session["botToken"].as_str().unwrap()
    ))
    .await
    .unwrap();
    let text = metrics(&daemon).await;
    assert_eq!(metric(&text, "mediaproc_ws_stalls_total"), 1, "{text}");
    drop(bot);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_a_session_whose_bot_stopped_reading_at_once() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-stall-delete");
    // A write timeout far away: the bridge is stuck in a send when DELETE comes.
    let daemon = mediaproc_daemon::start(stall_config(&dir, 60_000))
        .await
        .unwrap();
    let session = create_session(&daemon, json!({})).await;
    let edge = connect_edge(&daemon, &session).await.unwrap();
    let source = speech(16_000 * 6, 16_000);
    let packets = opus_packets(&source, 6);
    let mut bot = stalling_bot(&session).await;
    let talking = tokio::spawn(async move {
        talk_and_listen(&edge, &packets, Duration::ZERO).await;
    });
    // The bridge is stuck once it stops draining the session's inbound frames: they overrun.
    wait_until(Duration::from_secs(20), "the bridge to block", || async {
        let stats = session_stats(&daemon, &session).await;
        (stats["stats"]["overruns"].as_u64().unwrap_or(0) > 5).then_some(())
    })
    .await;
    let started = Instant::now();
    let status = http()
        .delete(format!(
            "http://{}/v1/sessions/{}",
            daemon.api_addr,
            session["sessionId"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    let deleted = started.elapsed();
    assert_eq!(status, 204);
    println!("DELETE beside a stalled bot answered in {deleted:?}");
    assert!(deleted < Duration::from_secs(1), "{deleted:?}");
    // The daemon drops the stalled connection: the bot, reading at last, drains what was queued and sees the end.
    use futures_util::StreamExt;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = bot.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stalled bot's connection stayed open");
    let text = metrics(&daemon).await;
    assert_eq!(metric(&text, "mediaproc_sessions"), 0);
    assert_eq!(metric(&text, "mediaproc_session_end_unconfirmed_total"), 0);
    talking.abort();
    daemon.shutdown().await;
}

fn wav_samples(path: &std::path::Path) -> Vec<i16> {
    let reader = hound::WavReader::open(path)
        .unwrap_or_else(|err| panic!("{}: not a valid WAV: {err}", path.display()));
    reader.into_samples::<i16>().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_rotate_or_stop_at_their_caps_and_stay_valid_wavs() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial().await;
    for rotate in [true, false] {
        let dir = temp_dir("hostile-record");
        // 1 s per file (16 000 samples), three files at most.
        let daemon = mediaproc_daemon::start(Config {
            recording_max_seconds: 1,
            recording_max_files: 3,
            recording_rotate: rotate,
            ..test_config(&dir)
        })
        .await
        .unwrap();
        let session = create_session(&daemon, json!({"bot": "record"})).await;
        let id = session["sessionId"].as_str().unwrap().to_owned();
        let edge = connect_edge(&daemon, &session).await.unwrap();
        let source = speech(16_000 * 7 / 2, 16_000);
        talk_and_listen(&edge, &opus_packets(&source, 8), Duration::from_millis(300)).await;
        let stats = wait_until(Duration::from_secs(5), "the caps in the stats", || async {
            let stats = session_stats(&daemon, &session).await;
            let hit = stats["stats"]["recording"]["capsHit"].as_u64().unwrap_or(0);
            (hit >= if rotate { 3 } else { 1 }).then_some(stats)
        })
        .await;
        daemon.shutdown().await;
        let part = |n: u32| match n {
            0 => dir.join(format!("{id}-mixed.wav")),
            n => dir.join(format!("{id}-mixed.{n}.wav")),
        };
        let first = wav_samples(&part(0));
        assert_eq!(first.len(), 16_000, "rotate {rotate}");
        let mode = std::fs::metadata(part(0)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "recordings are private");
        let (_, lag) = best_correlation(&source, &first, 16_000);
        assert!(windowed_correlation(&source, &first, lag) > 0.6);
        let recording = &stats["stats"]["recording"];
        if rotate {
            assert_eq!(wav_samples(&part(1)).len(), 16_000);
            assert_eq!(wav_samples(&part(2)).len(), 16_000);
            assert!(!part(3).exists(), "a fourth file past recording_max_files");
            assert!(recording["filesRefused"].as_u64().unwrap() >= 1, "{stats}");
            assert_eq!(recording["files"], 3, "{stats}");
            assert_eq!(stats["notices"][0]["event"], "recordingRotated", "{stats}");
        } else {
            assert!(!part(1).exists(), "no second part without rotation");
            assert_eq!(recording["capsHit"], 1, "{stats}");
            assert_eq!(stats["notices"][0]["event"], "recordingStopped", "{stats}");
        }
        assert_eq!(recording["writeErrors"], 0, "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_paths_outside_the_media_directory_and_fifos_are_refused_without_blocking() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-play");
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(dir.join("secret.wav"), spec).unwrap();
    for s in speech(16_000, 16_000) {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    std::fs::copy(dir.join("secret.wav"), media.join("prompt.wav")).unwrap();
    std::os::unix::fs::symlink(dir.join("secret.wav"), media.join("escape.wav")).unwrap();
    let fifo = media.join("fifo.wav");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `fifo_c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    let daemon = mediaproc_daemon::start(Config {
        media_dir: media.clone(),
        workers: 1,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    let healthy = healthy_echo(&daemon).await;

    let play = |file: String| {
        let daemon = &daemon;
        async move {
            let started = Instant::now();
            let response = http()
                .post(format!("http://{}/v1/sessions", daemon.api_addr))
                .bearer_auth(TOKEN)
                .json(&json!({"bot": {"type": "play", "file": file}}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        }
    };
    let secret = dir.join("secret.wav").to_str().unwrap().to_owned();
    let cases = [
        (secret, "outside the media directory"),
        ("../secret.wav".to_owned(), "`..`"),
        ("escape.wav".to_owned(), "outside the media directory"),
        ("fifo.wav".to_owned(), "not a regular file"),
        (fifo.to_str().unwrap().to_owned(), "not a regular file"),
    ];
    for (file, words) in &cases {
        let (status, body, elapsed) = play(file.clone()).await;
        assert_eq!(status, 400, "{file}: {body}");
        assert_eq!(body["error"]["code"], "invalid_bot", "{file}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{file}: `{message}` should say `{words}`"
        );
        assert!(elapsed < Duration::from_secs(1), "{file}: {elapsed:?}");
    }
    // Many FIFO requests at once (more than the runtime's threads) block nothing: /healthz still answers at once
    // and the healthy session's audio goes on.
    let fifos = futures_util::future::join_all((0..16).map(|_| play("fifo.wav".to_owned())));
    let probe = async {
        let (status, elapsed) = healthz(&daemon).await;
        assert_eq!(status, 200);
        elapsed
    };
    let (answers, elapsed, ()) = tokio::join!(fifos, probe, assert_echo_flows(&healthy, "fifo"));
    assert!(answers.iter().all(|(status, _, _)| *status == 400));
    assert!(
        elapsed < Duration::from_millis(100),
        "/healthz took {elapsed:?}"
    );
    // A file inside the directory plays.
    let (status, body, _) = play("prompt.wav".to_owned()).await;
    assert_eq!(status, 201, "{body}");
    let text = metrics(&daemon).await;
    assert_eq!(metric(&text, "mediaproc_sessions"), 2);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_answers_no_ping_is_disconnected_and_a_reading_bot_is_not() {
    use futures_util::StreamExt;
    let _serial = serial().await;
    let dir = temp_dir("hostile-pong");
    let daemon = mediaproc_daemon::start(Config {
        ws_ping_interval_ms: 200,
        ws_pong_timeout_ms: 500,
        // Far away: only the pong timeout can notice this bot (kernel buffers take its audio for a long time).
        ws_write_timeout_ms: 60_000,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    let deaf = create_session(&daemon, json!({})).await;
    let reading = create_session(&daemon, json!({})).await;
    let url = |session: &Value| {
        format!(
            "{}?token={}",
            session["mediaUrl"].as_str().unwrap(),
            session["botToken"].as_str().unwrap()
        )
    };
    let (deaf_bot, _) = tokio_tungstenite::connect_async(url(&deaf)).await.unwrap();
    let (mut reading_bot, _) = tokio_tungstenite::connect_async(url(&reading))
        .await
        .unwrap();
    let connected = Instant::now();
    // The reading bot reads (and so answers pings) for 2 s, far past the pong timeout.
    let pings = async {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout_at(until.into(), reading_bot.next()).await
        {
            if message.is_ping() {
                pings += 1;
            }
        }
        pings
    };
    let detected = wait_until(Duration::from_secs(5), "the pong timeout", || async {
        let stats = session_stats(&daemon, &deaf).await;
        (stats["stats"]["websocket"]["pongTimeouts"] == 1).then(|| connected.elapsed())
    });
    let (pings, after) = tokio::join!(pings, detected);
    println!(
        "a bot that answers no ping: disconnected {after:?} after connecting (ping 200 ms, pong timeout 500 ms)"
    );
    assert!(after >= Duration::from_millis(700), "{after:?}");
    assert!(pings >= 5, "the reading bot saw {pings} pings");
    let stats = session_stats(&daemon, &reading).await;
    assert_eq!(stats["stats"]["websocket"]["disconnects"], 0, "{stats}");
    assert_eq!(stats["stats"]["botConnected"], true, "{stats}");
    let deaf_stats = session_stats(&daemon, &deaf).await;
    assert_eq!(
        deaf_stats["notices"][0]["event"], "botPongTimeout",
        "{deaf_stats}"
    );
    drop(deaf_bot);
    daemon.shutdown().await;
}

/// The endpoint limits in the daemon's configuration reach the QUIC endpoint: a connection that never attaches
/// is closed at `quic_attach_deadline_ms`, and a second connection from the same address past
/// `quic_max_connections_per_address` is refused; both counted in `/metrics`. A healthy session is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_endpoint_limits_close_squatters_and_refuse_past_the_per_address_cap() {
    let _serial = serial().await;
    let dir = temp_dir("hostile-limits");
    let daemon = mediaproc_daemon::start(Config {
        quic_attach_deadline_ms: 300,
        quic_max_connections_per_address: 2,
        ..test_config(&dir)
    })
    .await
    .unwrap();
    let edge = healthy_echo(&daemon).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;
    let fingerprint =
        mediaproc_net::parse_fingerprint(session["certificateSha256"].as_str().unwrap()).unwrap();
    let config = mediaproc_net::EdgeConfig {
        server: daemon.media_addr.unwrap(),
        server_name: "localhost".to_owned(),
        trust: mediaproc_net::ServerTrust::PinnedSha256(fingerprint),
        keep_alive: Duration::from_secs(1),
    };
    let connect = || mediaproc_net::EdgeConnection::connect(&config);
    // The healthy edge holds one of the address's two slots; the squatter takes the other.
    let squatter = connect().await.unwrap();
    let refused = connect().await;
    assert!(refused.is_err(), "a third connection from 127.0.0.1 got in");
    wait_until(Duration::from_secs(10), "the squatter's close", || async {
        let text = metrics(&daemon).await;
        (metric(&text, "mediaproc_quic_closed_attach_deadline_total") >= 1
            && metric(
                &text,
                "mediaproc_quic_connections_refused_per_address_total",
            ) >= 1)
            .then_some(())
    })
    .await;
    drop(squatter);
    assert_echo_flows(&edge, "endpoint limits").await;
    daemon.shutdown().await;
}
