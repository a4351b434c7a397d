//! Shared helpers of the daemon's end-to-end tests: a daemon on loopback, an HTTP client, a QUIC edge that speaks
//! Opus, a speech-like signal, and cross-correlation.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use mediaproc_daemon::{Config, RunningDaemon};
use mediaproc_net::{EdgeConfig, EdgeConnection, ServerTrust, parse_fingerprint};
use mediaproc_pipeline::{
    CLASSIC_DECODER_COMPLEXITY, EncoderSettings, OpusDecoder, OpusEncoder, SampleRate,
};
use mediaproc_wire::control::{Codec, Direction, FlowDecl, MediaKind, NO_MSI};
use mediaproc_wire::rtp::RtpPacket;
use serde_json::Value;
use uuid::Uuid;

pub const TOKEN: &str = "test-token-0123456789";
pub const RENDER_FLOW: u64 = 4;
pub const SOURCE_FLOW: u64 = 6;
pub const SPEAKER_MSI: u32 = 7;

pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        api: "127.0.0.1:0".parse().unwrap(),
        media: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TOKEN.to_owned()),
        workers: 1,
        recordings_dir: dir.to_path_buf(),
        media_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mediaproc-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn daemon(dir: &std::path::Path) -> RunningDaemon {
    mediaproc_daemon::start(test_config(dir)).await.unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn create_session(daemon: &RunningDaemon, body: Value) -> Value {
    let response = http()
        .post(format!("http://{}/v1/sessions", daemon.api_addr))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// A speech-like signal: harmonics of a pitch that moves between 110 and 220 Hz, with a syllable envelope.
pub fn speech(samples: usize, rate: u32) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let pitch = 165.0 + 55.0 * (t * 1.3 * std::f64::consts::TAU).sin();
            phase += pitch / f64::from(rate) * std::f64::consts::TAU;
            let envelope = 0.55 + 0.45 * (t * 3.0 * std::f64::consts::TAU).sin();
            let voice: f64 = (1..=8)
                .map(|h| (phase * f64::from(h)).sin() / f64::from(h))
                .sum();
            (voice * envelope * 6000.0) as i16
        })
        .collect()
}

/// Peak normalised cross-correlation of `received` against `sent`, over lags 0..max_lag (received later).
pub fn best_correlation(sent: &[i16], received: &[i16], max_lag: usize) -> (f64, usize) {
    // Over the whole overlap at each lag; coarse steps of 4 samples, then refined around the peak.
    let at_lag = |lag: usize| {
        let n = sent.len().min(received.len().saturating_sub(lag));
        (n >= 1600).then(|| corr_at(sent, received, 0, n, lag))
    };
    let mut best = (0.0, 0);
    for lag in (0..max_lag).step_by(4) {
        let Some(c) = at_lag(lag) else { break };
        if c > best.0 {
            best = (c, lag);
        }
    }
    for lag in best.1.saturating_sub(4)..best.1 + 4 {
        if let Some(c) = at_lag(lag).filter(|c| *c > best.0) {
            best = (c, lag);
        }
    }
    best
}

/// A QUIC edge attached to a session: one render flow (a participant) and one source flow (the bot's audio).
pub struct Edge {
    pub conn: EdgeConnection,
    pub session_id: Uuid,
}

pub async fn connect_edge(
    daemon: &RunningDaemon,
    session: &Value,
) -> Result<Edge, mediaproc_net::NetError> {
    connect_edge_with_payload_type(daemon, session, 111).await
}

/// [`connect_edge`] with both flows declared with `payload_type` (proto/SPEC.md §4.1: the edge chooses it).
pub async fn connect_edge_with_payload_type(
    daemon: &RunningDaemon,
    session: &Value,
    payload_type: u8,
) -> Result<Edge, mediaproc_net::NetError> {
    connect_edge_with(daemon, session, payload_type, Codec::Opus).await
}

/// [`connect_edge`] with both flows declared with `payload_type` and `codec`.
pub async fn connect_edge_with(
    daemon: &RunningDaemon,
    session: &Value,
    payload_type: u8,
    codec: Codec,
) -> Result<Edge, mediaproc_net::NetError> {
    let blob: Value = serde_json::from_str(session["blob"].as_str().unwrap()).unwrap();
    let fingerprint = parse_fingerprint(session["certificateSha256"].as_str().unwrap()).unwrap();
    let conn = EdgeConnection::connect(&EdgeConfig {
        server: daemon.media_addr.unwrap(),
        server_name: "localhost".to_owned(),
        trust: ServerTrust::PinnedSha256(fingerprint),
        keep_alive: Duration::from_secs(1),
    })
    .await?;
    let session_id = Uuid::parse_str(session["sessionId"].as_str().unwrap()).unwrap();
    let render = Uuid::parse_str(blob["audioRenderContexts"][0].as_str().unwrap()).unwrap();
    let source = blob["audioSourceContexts"][0]
        .as_str()
        .map(|id| Uuid::parse_str(id).unwrap());
    let flow = |flow_id, direction, context, msi| FlowDecl {
        flow_id,
        direction,
        media: MediaKind::Audio,
        context,
        msi,
        payload_type,
        codec,
    };
    let token = session["edgeToken"].as_str().unwrap().as_bytes().to_vec();
    let mut flows = vec![flow(RENDER_FLOW, Direction::Render, render, SPEAKER_MSI)];
    if let Some(source) = source {
        flows.push(flow(SOURCE_FLOW, Direction::Source, source, NO_MSI));
    }
    conn.attach(session_id, &token, flows).await?;
    Ok(Edge { conn, session_id })
}

/// Encodes `pcm` (16 kHz) as 20 ms Opus RTP packets.
pub fn opus_packets(pcm: &[i16], ssrc: u32) -> Vec<Vec<u8>> {
    opus_packets_with_payload_type(pcm, ssrc, 111)
}

/// [`opus_packets`] with another RTP payload type.
pub fn opus_packets_with_payload_type(pcm: &[i16], ssrc: u32, payload_type: u8) -> Vec<Vec<u8>> {
    let mut encoder = OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default()).unwrap();
    let mut payload = [0u8; 1500];
    pcm.chunks_exact(320)
        .enumerate()
        .map(|(i, frame)| {
            let len = encoder.encode(frame, &mut payload).unwrap();
            let packet = RtpPacket::new(
                payload_type,
                i as u16,
                (i as u32) * 960,
                ssrc,
                &payload[..len],
            );
            let mut out = vec![0u8; packet.encoded_len()];
            packet.write(&mut out).unwrap();
            out
        })
        .collect()
}

/// Sends packets on the render flow at 20 ms intervals (absolute deadlines), while collecting what comes back on
/// the source flow; returns the decoded 16 kHz audio received, in RTP sequence order with gaps filled by silence.
pub async fn talk_and_listen(edge: &Edge, packets: &[Vec<u8>], listen_extra: Duration) -> Vec<i16> {
    let start = tokio::time::Instant::now();
    let total = Duration::from_millis(20) * packets.len() as u32 + listen_extra;
    let mut received: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut next = 0usize;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        while next < packets.len() && Duration::from_millis(20) * next as u32 <= elapsed {
            edge.conn.send_packet(RENDER_FLOW, &packets[next]).unwrap();
            next += 1;
        }
        let deadline = (start + Duration::from_millis(20) * (next as u32)).min(start + total);
        if let Ok(Ok((flow, bytes))) =
            tokio::time::timeout_at(deadline, edge.conn.recv_packet()).await
        {
            if flow == SOURCE_FLOW {
                if let Ok(rtp) = RtpPacket::parse(&bytes) {
                    received.push((rtp.sequence, rtp.payload.to_vec()));
                }
            }
        }
    }
    decode_in_order(&received)
}

pub fn decode_in_order(packets: &[(u16, Vec<u8>)]) -> Vec<i16> {
    let mut decoder =
        OpusDecoder::with_complexity(SampleRate::HZ_16000, CLASSIC_DECODER_COMPLEXITY).unwrap();
    let mut sorted = packets.to_vec();
    let Some(first) = sorted.first().map(|p| p.0) else {
        return Vec::new();
    };
    sorted.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
    let mut out = Vec::new();
    let mut frame = [0i16; 320];
    let mut expected = first;
    for (seq, payload) in &sorted {
        // Conceal lost packets so the timeline stays aligned.
        while expected != *seq && seq.wrapping_sub(expected) < 1000 {
            decoder.conceal(&mut frame).unwrap();
            out.extend_from_slice(&frame);
            expected = expected.wrapping_add(1);
        }
        decoder.decode(payload, &mut frame).unwrap();
        out.extend_from_slice(&frame);
        expected = seq.wrapping_add(1);
    }
    out
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

fn corr_at(sent: &[i16], received: &[i16], start: usize, len: usize, lag: usize) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for i in start..start + len {
        let (Some(&x), Some(&y)) = (sent.get(i), received.get(i + lag)) else {
            break;
        };
        let (x, y) = (f64::from(x), f64::from(y));
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx > 0.0 && yy > 0.0 {
        xy / (xx.sqrt() * yy.sqrt())
    } else {
        0.0
    }
}

/// Mean over 100 ms windows of the best correlation within ±25 ms of `lag` (at 16 kHz). Opus (SILK) shifts phase
/// locally (±5 ms), and the playout may move the timeline once by up to a frame — a concealed frame after a late
/// packet, a time-scale step, or the ticks moved to just after the arrivals — when the test's sender (sharing the
/// 2 cores with the daemon) bunches its packets: a fixed lag then counts every later window as a mismatch (seen as
/// 0.513 against a bound of 0.517). A lost, misordered or corrupted frame still costs its window.
pub fn windowed_correlation(sent: &[i16], received: &[i16], lag: usize) -> f64 {
    let (scores, _) = windowed_scores(sent, received, lag, 400);
    mean(&scores)
}

/// Like [`windowed_correlation`], but each 1600-sample window takes its best lag within ±`max_shift` samples of
/// `lag`, and the lags are returned too (for a failure message). The playout may move its delay in quiet audio, in
/// one step, when a far end's packets bunch (a test's sender sharing the 2 cores with the daemon does, measured: one
/// step of 23–27 ms in the first second); a fixed lag counts every window after such a step as a mismatch. A lost,
/// misordered or corrupted frame still costs its window.
pub fn warp_aware_correlation(
    sent: &[i16],
    received: &[i16],
    lag: usize,
    max_shift: usize,
) -> (f64, Vec<usize>) {
    let (scores, lags) = windowed_scores(sent, received, lag, max_shift);
    (mean(&scores), lags)
}

fn windowed_scores(
    sent: &[i16],
    received: &[i16],
    lag: usize,
    max_shift: usize,
) -> (Vec<f64>, Vec<usize>) {
    let window = 1600;
    let (mut scores, mut lags) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start + window <= sent.len() && start + window + lag + max_shift <= received.len() {
        let (score, at) = (lag.saturating_sub(max_shift)..=lag + max_shift)
            .step_by(2)
            .map(|l| (corr_at(sent, received, start, window, l), l))
            .fold(
                (f64::MIN, lag),
                |best, c| if c.0 > best.0 { c } else { best },
            );
        scores.push(score);
        lags.push(at);
        start += window;
    }
    (scores, lags)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The ceiling for an echo: the source through two Opus generations (edge encode → daemon decode, daemon encode
/// → edge decode), windowed-correlated with the source.
pub fn two_generation_ceiling(source: &[i16]) -> f64 {
    let first = decode_in_order(&numbered(&opus_packets(source, 1)));
    let second = decode_in_order(&numbered(&opus_packets(&first, 2)));
    let (_, lag) = best_correlation(source, &second, 1600);
    windowed_correlation(source, &second, lag)
}

fn numbered(packets: &[Vec<u8>]) -> Vec<(u16, Vec<u8>)> {
    packets
        .iter()
        .map(|p| {
            let rtp = RtpPacket::parse(p).unwrap();
            (rtp.sequence, rtp.payload.to_vec())
        })
        .collect()
}

/// End-to-end tests measure real-time audio; run them one at a time within a test binary so that parallel daemons
/// on a 2-core machine do not disturb each other's timing.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// `GET /v1/sessions/{id}` of a session created with [`create_session`].
pub async fn session_stats(daemon: &RunningDaemon, session: &Value) -> Value {
    http()
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
        .unwrap()
}

/// The daemon's `/metrics` text.
pub async fn metrics(daemon: &RunningDaemon) -> String {
    http()
        .get(format!("http://{}/metrics", daemon.api_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the unlabelled series `name` in a `/metrics` text, if it is there.
pub fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The value of the series `name` in a `/metrics` text; a missing series fails the test (the daemon exports every
/// counter from its start, so absence is a bug, not a zero).
pub fn metric(text: &str, name: &str) -> u64 {
    metric_value(text, name).unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
}
