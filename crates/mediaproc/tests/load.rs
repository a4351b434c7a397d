//! `mediaproc load` end to end: it starts its own `mediaproc serve`, drives calls on each edge and writes the report
//! with every key `docs/performance.md` names. (The figures themselves are the business of runs on a quiet machine;
//! here only their presence and plausibility.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn load(extra: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("mediaproc-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("report-{}.json", extra.join("_").replace('-', "")));
    let output = Command::new(env!("CARGO_BIN_EXE_mediaproc"))
        .args(["load", "--calls", "3", "--seconds", "4", "--json"])
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("summary"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn assert_report(report: &serde_json::Value, edge: &str, bot: &str) {
    for key in [
        "calls",
        "seconds",
        "bot",
        "edge",
        "calls_per_connection",
        "daemon_cpu_us_per_call_tick",
        "bare_codec_us_per_call_tick",
        "overhead_ratio",
        "tick_lateness_ms",
        "late_ticks",
        "latency_ms",
        "loss",
        "concealed",
        "underruns",
        "memory_per_call_bytes",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(report["tick_lateness_ms"].get(key).is_some(), "{report}");
    }
    for key in [
        "in_to_bot_p50",
        "in_to_bot_p99",
        "echo_rtt_p50",
        "echo_rtt_p99",
    ] {
        assert!(report["latency_ms"].get(key).is_some(), "{report}");
    }
    assert_eq!(report["calls"], 3);
    assert_eq!(report["edge"], edge);
    assert_eq!(report["bot"], bot);
    // The daemon ran in its own process: its CPU time was read, and libopus measured beside it.
    assert!(
        report["daemon_cpu_us_per_call_tick"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["bare_codec_us_per_call_tick"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Every packet sent went out (3 calls, 4 s of 20 ms frames).
    assert_eq!(report["packets"]["sent"], 3 * 200, "{report}");
}

#[test]
fn load_on_quic_with_the_built_in_echo_measures_the_daemon_and_the_round_trip() {
    let report = load(&["--calls-per-connection", "1"]);
    assert_report(&report, "quic", "echo");
    assert_eq!(report["calls_per_connection"], 1);
    // The probe calls' tone bursts came back through the echo.
    assert!(
        report["latency_ms"]["echo_rtt_p50"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn load_on_rtp_with_websocket_bots_driven_by_the_tool() {
    let report = load(&["--edge", "rtp", "--bot", "websocket"]);
    assert_report(&report, "rtp", "websocket");
    assert!(
        report["latency_ms"]["echo_rtt_p50"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
