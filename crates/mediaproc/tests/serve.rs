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
            .json(&serde_json::json!({"bot": "record"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let id = session["sessionId"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300));

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
    // The WAV header was finalised: hound reads it (an unfinalised file has a zero data length and fails).
    let reader = hound::WavReader::open(dir.join(format!("{id}-mixed.wav"))).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
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
