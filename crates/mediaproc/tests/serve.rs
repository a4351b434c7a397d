//! `mediaproc serve` as a process: it starts, serves, and on SIGTERM ends calls cleanly and finalises recordings.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_ends_calls_and_finalises_recordings() {
    let dir = std::env::temp_dir().join(format!("mediaproc-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mediaproc"))
        .args([
            "serve",
            "--api",
            "127.0.0.1:0",
            "--media",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--recordings",
        ])
        .arg(&dir)
        .env("MEDIAPROC_API_TOKEN", "serve-test-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut api = None;
    let mut line = String::new();
    while api.is_none() && stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(url) = line.trim().strip_prefix("control API") {
            api = Some(url.trim().to_owned());
        }
        line.clear();
    }
    let api = api.expect("serve printed its control API address");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let session: serde_json::Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{api}/v1/sessions"))
            .bearer_auth("serve-test-token")
            .json(&serde_json::json!({"bot": "record", "rtp": {}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let id = session["sessionId"].as_str().unwrap().to_owned();
    // Half a second of audio on the session's RTP/UDP edge, so the recording has something to finalise (files
    // open with the first audio). `F8 FF FE` is a 20 ms Opus CELT frame of silence.
    let rtp_local: std::net::SocketAddr =
        session["rtp"]["local"].as_str().unwrap().parse().unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    for i in 0u16..25 {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&i.to_be_bytes());
        packet.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
        packet.extend_from_slice(&0x5eed_u32.to_be_bytes());
        packet.extend_from_slice(&[0xf8, 0xff, 0xfe]);
        peer.send_to(&packet, rtp_local).unwrap();
        // Paced by absolute deadlines (20 ms apart).
        let next = start + Duration::from_millis(20) * u32::from(i + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // Two RTP/UDP edges on a non-loopback address: the unencrypted-media warning is logged once, not per edge.
    for _ in 0..2 {
        let status = runtime.block_on(async {
            reqwest::Client::new()
                .post(format!("{api}/v1/sessions"))
                .bearer_auth("serve-test-token")
                .json(&serde_json::json!({"bot": "echo", "rtp": {"local": "0.0.0.0:0"}}))
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status, 201);
    }
    // Until the worker reports frames handed to the record bot (published once a second).
    let waited = Instant::now();
    loop {
        let stats: serde_json::Value = runtime.block_on(async {
            reqwest::Client::new()
                .get(format!("{api}/v1/sessions/{id}"))
                .bearer_auth("serve-test-token")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        if stats["stats"]["framesToBot"].as_u64() > Some(0) {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "no frames reached the record bot: {stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "serve did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("mediaproc serve stopped"), "{stderr}");
    // The effective media limits, once, on one line; the RTP/UDP warning once for two edges.
    let limits: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("media limits"))
        .collect();
    assert_eq!(limits.len(), 1, "{stderr}");
    assert!(limits[0].contains("quic_max_connections=1024 "), "{stderr}");
    assert!(limits[0].contains("rtp_rebind_packets=4"), "{stderr}");
    let unencrypted = stderr.lines().filter(|l| l.contains("unencrypted")).count();
    assert_eq!(unencrypted, 1, "{stderr}");
    // The WAV header was finalised: hound reads it (an unfinalised file has a zero data length and fails).
    let reader = hound::WavReader::open(dir.join(format!("{id}-mixed.wav"))).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    assert!(reader.duration() > 0, "the recording holds no audio");
}

#[test]
fn serve_refuses_a_bad_configuration_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("mediaproc-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(&config, "api = \"127.0.0.1:0\"\nwrokers = 3\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mediaproc"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("wrokers"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
