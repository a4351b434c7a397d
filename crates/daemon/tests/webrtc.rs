//! The WebRTC edge end to end: headless Chromium (Debian `chromium`, installed by `.ci/run`) talks to the echo bot
//! through the WHIP endpoint with a WAV file as its microphone; the echo it hears is recorded in the page and
//! scored here (windowed correlation against what it sent, and their lag: the browser-to-browser round trip), and
//! `getStats()` gives the network round trip. Plus the signalling's bad inputs and limits, without a browser.
//!
//! Without Chromium the browser test prints SKIPPED, and fails when `CI=true`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The recorder both page scripts use, put in front of each.
const RECORD_SCRIPT: &str = include_str!("webrtc_record.js");
const PAGE_SCRIPT: &str = include_str!("webrtc_page.js");
const LOOPBACK_SCRIPT: &str = include_str!("webrtc_loopback.js");
/// Seconds of echo the browser records.
const RECORD_SECONDS: u32 = 6;
/// Time the jitter buffers (the daemon's and the browser's) get to settle before the recording starts.
const WARMUP_MS: u32 = 2000;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Chromium, or `None` after saying the test is skipped; with `CI=true` a missing browser fails the test.
fn chromium_or_skip() -> Option<&'static str> {
    let binary = chromium();
    if binary.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and Chromium is missing (.ci/run installs the Debian package `chromium`)"
        );
        println!("SKIPPED: chromium not found (apt-get install chromium)");
    }
    binary
}

/// Talk spurts of the speech-like signal between pauses of varying length, so a lag has one clear answer.
fn spurts(seconds: u32, rate: u32) -> Vec<i16> {
    let voice = speech((seconds * rate) as usize, rate);
    let mut out = vec![0i16; voice.len()];
    let (mut at, mut seed) = (rate as usize / 5, 7u32);
    while at < out.len() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let talk = rate as usize * (250 + (seed >> 16) as usize % 450) / 1000;
        let pause = rate as usize * (150 + (seed >> 8) as usize % 350) / 1000;
        let end = (at + talk).min(out.len());
        out[at..end].copy_from_slice(&voice[at..end]);
        at = end + pause;
    }
    out
}

fn write_wav(path: &std::path::Path, samples: &[i16], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
}

/// Headless Chromium and its throw-away profile; both go when it is dropped.
struct Browser(Child, std::path::PathBuf);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts headless Chromium on `url` and returns it with its DevTools port.
async fn start_browser(binary: &str, url: &str, wav: &std::path::Path) -> (Browser, u16) {
    let profile = temp_dir("chromium-profile");
    let child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-loopback-in-peer-connection",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "--use-file-for-fake-audio-capture={}",
            wav.display()
        ))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let browser = Browser(child, profile.clone());
    let port_file = profile.join("DevToolsActivePort");
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return (browser, port);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Chromium did not open its DevTools port");
}

/// Evaluates `expression` (a promise of a string) in the browser's page and returns its value.
async fn evaluate(devtools: u16, page_url_prefix: &str, expression: &str) -> String {
    let mut target = None;
    for _ in 0..200 {
        let list: Value = http()
            .get(format!("http://127.0.0.1:{devtools}/json/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        target = list.as_array().into_iter().flatten().find_map(|t| {
            (t["type"] == "page" && t["url"].as_str().unwrap_or("").starts_with(page_url_prefix))
                .then(|| t["webSocketDebuggerUrl"].as_str().unwrap().to_owned())
        });
        if target.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(target.expect("the page's DevTools target"))
        .await
        .unwrap();
    // The target exists before the page has loaded: wait for the loaded page (a secure context) first.
    let loaded = "new Promise((resolve) => { const check = () => document.readyState === 'complete' && \
        location.protocol === 'http:' ? resolve(String(window.isSecureContext)) : setTimeout(check, 50); check(); })";
    let mut secure = Err(Value::Null);
    for id in 1..100 {
        // "Execution context was destroyed" while the navigation commits: ask again.
        secure = run_script(&mut ws, id, loaded).await;
        if secure.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        secure,
        Ok("true".to_owned()),
        "the page is not a secure context"
    );
    run_script(&mut ws, 1000, expression)
        .await
        .unwrap_or_else(|reply| panic!("the page script failed: {reply}"))
}

async fn run_script<S>(ws: &mut S, id: u64, expression: &str) -> Result<String, Value>
where
    S: futures_util::Sink<Message>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures_util::Sink<Message>>::Error: std::fmt::Debug,
{
    let request = json!({
        "id": id,
        "method": "Runtime.evaluate",
        "params": {"expression": expression, "awaitPromise": true, "returnByValue": true},
    });
    ws.send(Message::text(request.to_string())).await.unwrap();
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message.unwrap() else {
            continue;
        };
        let reply: Value = serde_json::from_str(&text).unwrap();
        if reply["id"] == id {
            return match reply["result"]["result"]["value"].as_str() {
                Some(value) if reply["result"]["exceptionDetails"].is_null() => {
                    Ok(value.to_owned())
                }
                _ => Err(reply),
            };
        }
    }
    panic!("DevTools closed before answering");
}

fn samples(value: &Value) -> Vec<i16> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap_or(0) as i16)
        .collect()
}

/// Per 500 ms window with speech: the best lag (0..400 ms) of `received` against `sent`, and the windowed
/// correlation at it (100 ms parts, each within ±5 ms: Opus shifts phase locally).
fn window_lags(sent: &[i16], received: &[i16], rate: usize) -> Vec<(f64, usize)> {
    let window = rate / 2;
    let max_lag = rate * 2 / 5;
    let mut out = Vec::new();
    let mut start = 0;
    while start + window + max_lag <= sent.len().min(received.len()) {
        let part = &sent[start..start + window];
        if rms(part) > 300.0 {
            let (_, lag) = best_correlation(part, &received[start..], max_lag);
            out.push((windowed_correlation(part, &received[start..], lag), lag));
        }
        start += window;
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_talks_to_the_echo_bot_through_whip() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let _serial = serial().await;
    let dir = temp_dir("webrtc");
    let daemon = daemon(&dir).await;
    // MEDIAPROC_WEBRTC_ENCODER='{"dtx":false}' sets the session's encoder (docs/api.md), e.g. to compare.
    let encoder: Value = std::env::var("MEDIAPROC_WEBRTC_ENCODER")
        .map(|e| serde_json::from_str(&e).expect("MEDIAPROC_WEBRTC_ENCODER is JSON"))
        .unwrap_or_else(|_| json!({}));
    let dtx = encoder["dtx"].as_bool().unwrap_or(true);
    let session = create_session(&daemon, json!({"bot": "echo", "encoder": encoder})).await;
    let id = session["sessionId"].as_str().unwrap();
    let token = session["edgeToken"].as_str().unwrap();
    // MEDIAPROC_WEBRTC_MIC=FILE.wav plays a file of your own (e.g. espeak-ng speech) instead of the talk spurts.
    let wav = match std::env::var("MEDIAPROC_WEBRTC_MIC") {
        Ok(file) => std::path::PathBuf::from(file),
        Err(_) => {
            let wav = dir.join("mic.wav");
            write_wav(&wav, &spurts(8, 48_000), 48_000);
            wav
        }
    };

    let page = format!("http://{}/talk", daemon.api_addr);
    let started = std::time::Instant::now();
    let (_browser, devtools) = start_browser(binary, &format!("{page}#test"), &wav).await;
    let script = format!("{RECORD_SCRIPT}\n{PAGE_SCRIPT}")
        .replace("__SESSION__", id)
        .replace("__TOKEN__", token)
        .replace("__SECONDS__", &RECORD_SECONDS.to_string())
        .replace("__WARMUP_MS__", &WARMUP_MS.to_string());
    // A QUIC edge talks to another echo session at the same time: neither may disturb the other.
    let quic_session = create_session(&daemon, json!({"bot": "echo"})).await;
    let quic_source = speech(16_000 * 3, 16_000);
    let quic_packets = opus_packets(&quic_source, 0x5151);
    let quic = async {
        // Starts while the browser connects and warms up, ends within its recording.
        tokio::time::sleep(Duration::from_millis(WARMUP_MS.into())).await;
        // Attached only now, so no echo of silence queues up on the edge before it listens.
        let edge = connect_edge(&daemon, &quic_session).await.unwrap();
        talk_and_listen(&edge, &quic_packets, Duration::from_millis(600)).await
    };
    // The daemon's wait (arrival → decode) every 300 ms while the page runs; MEDIAPROC_WEBRTC_TRACE=1 prints the
    // session's playout figures each time.
    let verbose = std::env::var_os("MEDIAPROC_WEBRTC_TRACE").is_some();
    let page_done = std::sync::atomic::AtomicBool::new(false);
    let trace = async {
        let mut waits = Vec::new();
        while !page_done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let st = session_stats(&daemon, &session).await;
            let w = &st["stats"]["webrtc"]["stream"];
            // From 4 s of packets on: past the stream's 3 s start hold.
            if let (Some(wait), Some(received)) =
                (w["packetWaitMs"].as_f64(), w["received"].as_u64())
                && received > 200
            {
                waits.push(wait);
            }
            if !verbose {
                continue;
            }
            println!(
                "trace: tick slack {} ms, shifts {}; target {} playout {} envelope {} wait {} ms; accelerated {} \
                 decelerated {} ms, underruns {}, late {}",
                st["stats"]["tickSlackMs"],
                st["stats"]["tickPhaseShifts"],
                w["targetDelayMs"],
                w["playoutDelayMs"],
                w["envelopeDelayMs"],
                w["packetWaitMs"],
                w["acceleratedMs"],
                w["deceleratedMs"],
                w["underruns"],
                w["late"],
            );
        }
        waits
    };
    let (page_result, quic_received, waits) = tokio::join!(
        async {
            let result = evaluate(devtools, &page, &script).await;
            page_done.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        },
        quic,
        trace
    );
    let mean_wait = waits.iter().sum::<f64>() / waits.len().max(1) as f64;
    let result: Value = serde_json::from_str(&page_result).unwrap();
    assert!(result["error"].is_null(), "{}", result["error"]);
    let sent = samples(&result["sent"]);
    let received = samples(&result["received"]);
    assert!(rms(&sent) > 300.0, "the fake microphone was silent");
    assert!(
        rms(&received) > 100.0,
        "no echo came back (rms {})",
        rms(&received)
    );

    // For scoring by hand (e.g. PESQ-WB with benches/quality/score.py): MEDIAPROC_WEBRTC_DUMP=DIR keeps both sides.
    if let Ok(dump) = std::env::var("MEDIAPROC_WEBRTC_DUMP") {
        let dump = std::path::Path::new(&dump);
        std::fs::create_dir_all(dump).unwrap();
        write_wav(&dump.join("sent.wav"), &sent, 16_000);
        write_wav(&dump.join("received.wav"), &received, 16_000);
    }
    let lags = window_lags(&sent, &received, 16_000);
    assert!(lags.len() >= 4, "too few windows with speech: {lags:?}");
    let lag_ms: Vec<f64> = lags.iter().map(|(_, l)| *l as f64 / 16.0).collect();
    let correlations: Vec<f64> = lags.iter().map(|(c, _)| *c).collect();
    let p50_lag = median(lag_ms.clone());
    let p50_corr = median(correlations.clone());
    let ceiling = two_generation_ceiling(&sent);
    let rtt = median(
        result["rttMs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect(),
    );
    let stats = session_stats(&daemon, &session).await;
    println!(
        "webrtc echo: round trip p50 {p50_lag:.1} ms (windows {lag_ms:?}), windowed correlation p50 \
         {p50_corr:.3} (two Opus generations alone: {ceiling:.3}), getStats RTT p50 {rtt:.2} ms, connect {:.0} ms, \
         browser jitter buffer {} ms (while recording: {}), packets sent {} received {} lost {}, test {:.1} s",
        result["connectMs"].as_f64().unwrap_or(0.0),
        result["jitterBufferDelayMs"],
        result["netEq"],
        result["packetsSent"],
        result["packetsReceived"],
        result["packetsLost"],
        started.elapsed().as_secs_f64(),
    );
    println!(
        "daemon: packet wait (arrival to decode) mean {mean_wait:.1} ms over {} samples after the start hold",
        waits.len()
    );
    println!(
        "daemon: tick phase shifts {}, tick slack {} ms, webrtc {} peer {}",
        stats["stats"]["tickPhaseShifts"],
        stats["stats"]["tickSlackMs"],
        stats["stats"]["webrtc"],
        stats["webrtc"]
    );
    // As the QUIC echo test: within 80 % of what two Opus generations alone leave of the signal.
    assert!(
        p50_corr > 0.8 * ceiling,
        "the echo does not sound like what was sent: {p50_corr:.3} vs ceiling {ceiling:.3}"
    );
    // The target on loopback is 60 ms (issue 11; measured figures in docs/webrtc.md). The bound catches a broken
    // path (a stuck jitter buffer, a lost tick) while leaving room for a loaded 2-core CI machine, where
    // Chromium's own jitter buffer grows (203 ms seen once at load average 6 on 2 cores; 65-80 ms unloaded).
    assert!(p50_lag < 300.0, "echo round trip p50 {p50_lag} ms");
    assert!(
        stats["stats"]["webrtc"]["rxPackets"].as_u64().unwrap_or(0) > 100,
        "{stats}"
    );
    assert_eq!(stats["webrtc"]["state"], "connected", "{stats}");
    assert!(
        stats["stats"]["echoFrames"].as_u64().unwrap_or(0) > 100,
        "{stats}"
    );
    // DTX toward the browser (`webrtc_dtx`): the pauses between the talk spurts are not sent.
    assert_eq!(stats["stats"]["encoder"]["dtx"], dtx, "{stats}");
    let not_sent = stats["stats"]["dtxNotSent"].as_u64().unwrap_or(0);
    assert!(if dtx { not_sent > 25 } else { not_sent == 0 }, "{stats}");
    let notices = stats["notices"].to_string();
    assert!(notices.contains("webrtcConnected"), "{notices}");

    let (_, quic_lag) = best_correlation(&quic_source, &quic_received, 16_000);
    let quic_windowed = windowed_correlation(&quic_source, &quic_received, quic_lag);
    let quic_ceiling = two_generation_ceiling(&quic_source);
    println!(
        "quic echo beside it: windowed correlation {quic_windowed:.3} (ceiling {quic_ceiling:.3}) at {:.1} ms",
        quic_lag as f64 / 16.0
    );
    assert!(
        quic_windowed > 0.8 * quic_ceiling,
        "the QUIC session was disturbed"
    );
    let quic_stats = session_stats(&daemon, &quic_session).await;
    assert!(quic_stats["webrtc"].is_null(), "{quic_stats}");
    assert_eq!(
        quic_stats["stats"]["network"]["rxRingDropped"], 0,
        "{quic_stats}"
    );

    // The peer's edge and stream are in /metrics like the other edges'.
    let text = metrics(&daemon).await;
    let webrtc_edge = format!("mediaproc_edge_lost_total{{session=\"{id}\",edge=\"webrtc\"}}");
    assert!(text.contains(&webrtc_edge), "{text}");
    assert!(text.contains("edge=\"webrtc\",source="), "{text}");
    assert_eq!(metric(&text, "mediaproc_webrtc_peers"), 1, "{text}");
    assert_eq!(
        metric(&text, "mediaproc_webrtc_connected_total"),
        1,
        "{text}"
    );

    // WHIP DELETE on the Location ends the peer; the session stays.
    let location = result["location"].as_str().unwrap();
    let url = format!("http://{}{location}", daemon.api_addr);
    let wrong = http()
        .delete(&url)
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let deleted = http().delete(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let again = http().delete(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(again.status(), 404);
    let after = session_stats(&daemon, &session).await;
    assert!(after["webrtc"].is_null(), "{after}");
    assert_ne!(after["state"], "ended", "{after}");

    // The browser's own floor, in the same browser and run: its one-way delay between two of its own peer
    // connections (capture, Opus framing, NetEQ, playout). The echo's round trip minus this is roughly the daemon's
    // share.
    let loopback = format!("{RECORD_SCRIPT}\n{LOOPBACK_SCRIPT}")
        .replace("__SECONDS__", &RECORD_SECONDS.to_string())
        .replace("__WARMUP_MS__", &WARMUP_MS.to_string());
    let floor: Value = serde_json::from_str(&evaluate(devtools, &page, &loopback).await).unwrap();
    assert!(floor["error"].is_null(), "{}", floor["error"]);
    let floor_lags = window_lags(
        &samples(&floor["sent"]),
        &samples(&floor["received"]),
        16_000,
    );
    assert!(
        floor_lags.len() >= 4,
        "too few windows with speech: {floor_lags:?}"
    );
    let floor_p50 = median(floor_lags.iter().map(|(_, l)| *l as f64 / 16.0).collect());
    println!(
        "browser alone (one peer connection to another in the page): one-way p50 {floor_p50:.1} ms, browser jitter \
         buffer {} ms (while recording: {}); the echo's round trip through the daemon {p50_lag:.1} ms, {:.1} ms \
         above this floor (a rough share: Chromium's path differs by 10-20 ms between its peer connections; \
         benches/webrtc/wire.py measures the daemon's hold on the wire)",
        floor["jitterBufferDelayMs"],
        floor["netEq"],
        p50_lag - floor_p50
    );
    daemon.shutdown().await;
}

/// A minimal WebRTC offer (what a browser's looks like, trimmed): one audio m-line with these codecs.
fn offer(rtpmaps: &str, pts: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=sendrecv\r\n\
         a=rtcp-mux\r\n{rtpmaps}"
    )
}

fn opus_offer() -> String {
    offer(
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        "111",
    )
}

async fn post_offer(
    daemon: &mediaproc_daemon::RunningDaemon,
    session: &Value,
    sdp: &str,
) -> (u16, String, Option<String>) {
    post_offer_as(
        daemon,
        session,
        sdp,
        session["edgeToken"].as_str().unwrap(),
        "application/sdp",
    )
    .await
}

async fn post_offer_as(
    daemon: &mediaproc_daemon::RunningDaemon,
    session: &Value,
    sdp: &str,
    token: &str,
    content_type: &str,
) -> (u16, String, Option<String>) {
    let response = http()
        .post(format!(
            "http://{}/v1/sessions/{}/webrtc",
            daemon.api_addr,
            session["sessionId"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.text().await.unwrap(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_are_refused_saying_what_is_wrong() {
    let _serial = serial().await;
    let dir = temp_dir("webrtc-bad");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;

    let (status, body, _) = post_offer(&daemon, &session, "this is not SDP").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid_sdp") && body.contains("SDP"),
        "{body}"
    );

    let (status, body, _) = post_offer(&daemon, &session, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("empty"), "{body}");

    let video = offer("a=rtpmap:96 VP8/90000\r\n", "96").replace("m=audio", "m=video");
    let (status, body, _) = post_offer(&daemon, &session, &video).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no (enabled) audio m-line"), "{body}");

    let pcmu = offer("a=rtpmap:0 PCMU/8000\r\n", "0");
    let (status, body, _) = post_offer(&daemon, &session, &pcmu).await;
    assert_eq!(status, 406, "{body}");
    assert!(
        body.contains("no_opus") && body.contains("opus/48000/2"),
        "{body}"
    );

    let (status, body, _) = post_offer_as(
        &daemon,
        &session,
        &opus_offer(),
        session["edgeToken"].as_str().unwrap(),
        "application/json",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("application/sdp"), "{body}");

    // A wrong token and an unknown session look the same.
    let (status, _, _) = post_offer_as(
        &daemon,
        &session,
        &opus_offer(),
        "wrong-token-0123456789",
        "application/sdp",
    )
    .await;
    assert_eq!(status, 401);
    let mut unknown = session.clone();
    unknown["sessionId"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, _, _) = post_offer(&daemon, &unknown, &opus_offer()).await;
    assert_eq!(status, 401);
    // The session's bot token is not its edge token.
    let (status, _, _) = post_offer_as(
        &daemon,
        &session,
        &opus_offer(),
        session["botToken"].as_str().unwrap(),
        "application/sdp",
    )
    .await;
    assert_eq!(status, 401);

    let text = metrics(&daemon).await;
    assert_eq!(
        metric(&text, "mediaproc_webrtc_refused_sdp_total"),
        3,
        "{text}"
    );
    assert_eq!(
        metric(&text, "mediaproc_webrtc_refused_no_opus_total"),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "mediaproc_webrtc_answered_total"),
        0,
        "{text}"
    );
    let stats = session_stats(&daemon, &session).await;
    assert!(stats["webrtc"].is_null(), "{stats}");
    // The talk page is off unless configured.
    assert!(daemon.talk_url().is_none());
    let page = http()
        .get(format!("http://{}/talk", daemon.api_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_capped_replaced_and_a_failed_handshake_keeps_the_session() {
    let _serial = serial().await;
    let dir = temp_dir("webrtc-cap");
    let base = 41_000 + (std::process::id() % 5_000) as u16 * 2;
    let config = mediaproc_daemon::Config {
        webrtc_max_peers: 1,
        webrtc_connect_timeout_ms: 700,
        webrtc_port_min: base,
        webrtc_port_max: base + 1,
        ..test_config(&dir)
    };
    let daemon = mediaproc_daemon::start(config).await.unwrap();
    let a = create_session(&daemon, json!({"bot": "echo"})).await;
    let b = create_session(&daemon, json!({"bot": "echo"})).await;

    let (status, answer, location) = post_offer(&daemon, &a, &opus_offer()).await;
    assert_eq!(status, 201, "{answer}");
    let location = location.unwrap();
    assert!(location.starts_with(&format!(
        "/v1/sessions/{}/webrtc/",
        a["sessionId"].as_str().unwrap()
    )));
    assert!(
        answer.contains("a=ice-lite") && answer.contains("opus/48000/2"),
        "{answer}"
    );
    let port_in_range =
        (base..=base + 1).any(|p| answer.contains(&format!("127.0.0.1 {p} typ host")));
    assert!(
        port_in_range,
        "candidate outside {base}-{}: {answer}",
        base + 1
    );

    // Strangers' datagrams at the peer's port (not STUN/DTLS/SRTP of this peer) are refused and counted.
    let port = (base..=base + 1)
        .find(|p| answer.contains(&format!("127.0.0.1 {p} typ host")))
        .unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..64u8 {
        let garbage: Vec<u8> = (0..(i as usize * 7 % 200 + 1))
            .map(|j| (j as u8).wrapping_mul(i) ^ 0x80)
            .collect();
        stranger.send_to(&garbage, ("127.0.0.1", port)).unwrap();
    }
    let mut rejected = 0;
    for _ in 0..100 {
        rejected = session_stats(&daemon, &a).await["webrtc"]["rejectedDatagrams"]
            .as_u64()
            .unwrap_or(0);
        if rejected >= 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejected >= 32, "rejected {rejected}");

    // The cap counts peers of other sessions: B is refused while A's peer runs.
    let (status, body, _) = post_offer(&daemon, &b, &opus_offer()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too_many_webrtc_peers"), "{body}");

    // A second offer on A replaces A's peer.
    let (status, _, second) = post_offer(&daemon, &a, &opus_offer()).await;
    assert_eq!(status, 201);
    let second = second.unwrap();
    assert_ne!(second, location);
    let url = |path: &str| format!("http://{}{path}", daemon.api_addr);
    let token = a["edgeToken"].as_str().unwrap();
    let old = http()
        .delete(url(&location))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404, "the replaced resource is gone");

    // Nobody completes ICE: the peer fails at the deadline, with a notice; the session is kept.
    let mut stats = session_stats(&daemon, &a).await;
    for _ in 0..100 {
        if stats["notices"].to_string().contains("webrtcFailed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = session_stats(&daemon, &a).await;
    }
    let notices = stats["notices"].to_string();
    assert!(
        notices.contains("webrtcFailed") && notices.contains("did not complete"),
        "{notices}"
    );
    assert_eq!(stats["webrtc"]["state"], "failed", "{stats}");
    assert_ne!(stats["state"], "ended");
    let text = metrics(&daemon).await;
    assert_eq!(metric(&text, "mediaproc_webrtc_failed_total"), 1, "{text}");
    assert_eq!(
        metric(&text, "mediaproc_webrtc_replaced_total"),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "mediaproc_webrtc_refused_full_total"),
        1,
        "{text}"
    );
    assert_eq!(metric(&text, "mediaproc_webrtc_peers"), 0, "{text}");

    // A failed peer no longer counts: B gets its peer now, and a new offer revives A.
    let (status, body, _) = post_offer(&daemon, &b, &opus_offer()).await;
    assert_eq!(status, 201, "{body}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_talk_page_starts_a_session_talks_and_hangs_up() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let _serial = serial().await;
    let dir = temp_dir("webrtc-page");
    let config = mediaproc_daemon::Config {
        talk_page: true,
        ..test_config(&dir)
    };
    let daemon = mediaproc_daemon::start(config).await.unwrap();
    let wav = dir.join("mic.wav");
    write_wav(&wav, &spurts(4, 48_000), 48_000);
    let url = daemon.talk_url().unwrap();
    assert!(url.contains("/talk#token="), "{url}");
    // The page itself holds no token; the API token never appears in it.
    let html = http()
        .get(url.split('#').next().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains(TOKEN) && !html.contains(url.split("token=").nth(1).unwrap()));
    // The page token creates page sessions and nothing else.
    let page_token = url.split("token=").nth(1).unwrap();
    let sessions_with_page_token = http()
        .get(format!("http://{}/v1/sessions", daemon.api_addr))
        .bearer_auth(page_token)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions_with_page_token.status(), 401);

    // Another session's edge token does not reach it through the page API.
    let other = create_session(&daemon, json!({"bot": "echo"})).await;
    let other_id = other["sessionId"].as_str().unwrap();
    let via_page = http()
        .delete(format!(
            "http://{}/v1/talk/sessions/{other_id}",
            daemon.api_addr
        ))
        .bearer_auth(other["edgeToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(via_page.status(), 404);
    assert!(
        http()
            .delete(format!("http://{}/v1/sessions/{other_id}", daemon.api_addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let (_browser, devtools) = start_browser(binary, &url, &wav).await;
    let script = r#"(async () => {
        const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
        document.querySelector("input[value=tone]").click();
        document.getElementById("start").click();
        const state = () => document.getElementById("state").textContent;
        for (let i = 0; i < 200 && state() !== "connected"; i++) await sleep(50);
        const connected = state();
        await sleep(2500);
        const stats = document.getElementById("stats").innerText;
        return JSON.stringify({ connected, stats });
    })()"#;
    let page = format!("http://{}/talk", daemon.api_addr);
    let result: Value = serde_json::from_str(&evaluate(devtools, &page, script).await).unwrap();
    println!("talk page: {result}");
    assert_eq!(result["connected"], "connected", "{result}");
    let stats = result["stats"].as_str().unwrap();
    assert!(
        stats.contains("network round trip") && stats.contains("tone"),
        "{stats}"
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
    assert_eq!(list["sessions"][0]["bot"], "tone", "{list}");
    let hang_up = r#"(async () => {
        document.getElementById("stop").click();
        for (let i = 0; i < 100 && document.getElementById("state").textContent !== "idle"; i++)
            await new Promise((r) => setTimeout(r, 50));
        return document.getElementById("state").textContent;
    })()"#;
    assert_eq!(evaluate(devtools, &page, hang_up).await, "idle");
    assert_eq!(
        daemon_sessions(&daemon).await,
        0,
        "hanging up ends the page's session"
    );
    daemon.shutdown().await;
}

async fn daemon_sessions(daemon: &mediaproc_daemon::RunningDaemon) -> usize {
    let list: Value = http()
        .get(format!("http://{}/v1/sessions", daemon.api_addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["sessions"].as_array().map_or(0, Vec::len)
}

/// Whether Python has aiortc (`.ci/run` installs it from PyPI).
fn aiortc() -> bool {
    Command::new("python3")
        .args(["-c", "import aiortc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_sends_speech_through_whip_and_hears_the_echo() {
    if !aiortc() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and Python's aiortc is missing (.ci/run installs it: pip install aiortc)"
        );
        println!("SKIPPED: python3 -c 'import aiortc' failed (pip install aiortc)");
        return;
    }
    let _serial = serial().await;
    let dir = temp_dir("webrtc-aiortc");
    let daemon = daemon(&dir).await;
    let session = create_session(&daemon, json!({"bot": "echo"})).await;
    let source = spurts(3, 16_000);
    let source_path = dir.join("source.raw");
    let out_path = dir.join("received.raw");
    let bytes: Vec<u8> = source.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&source_path, bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whip_aiortc.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(["--base", &format!("http://{}", daemon.api_addr)])
        .args(["--session", session["sessionId"].as_str().unwrap()])
        .args(["--token", session["edgeToken"].as_str().unwrap()])
        .arg("--source")
        .arg(&source_path)
        .arg("--out")
        .arg(&out_path)
        .args(["--seconds", "4"]);
    // The client runs its own event loop; the daemon's runtime keeps serving on the other thread.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aiortc client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["connected"], "connected", "{summary}");
    assert_eq!(summary["deleteStatus"], 200, "{summary}");
    let raw = std::fs::read(&out_path).unwrap();
    let received: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (_, lag) = best_correlation(&source, &received, 16_000);
    let windowed = windowed_correlation(&source, &received, lag);
    let ceiling = two_generation_ceiling(&source);
    println!(
        "aiortc echo: windowed correlation {windowed:.3} (ceiling {ceiling:.3}) at {:.1} ms (aiortc's own \
         buffering included)",
        lag as f64 / 16.0
    );
    // aiortc's receiver (Python, a plain jitter buffer without time-scaling) loses frames on a loaded machine: 0.437
    // of a 0.464 ceiling unloaded, 0.359 once at load average 6. An unrelated signal scores near 0.
    assert!(
        windowed > 0.6 * ceiling,
        "the echo does not sound like what aiortc sent: {windowed:.3} vs ceiling {ceiling:.3}"
    );
    daemon.shutdown().await;
}
