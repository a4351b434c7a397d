//! Third-party interop through the whole daemon: GStreamer sends speech as Opus RTP to a session's RTP/UDP port,
//! the built-in echo bot sends it back, a second GStreamer pipeline writes what comes back to a WAV. Skipped with a
//! printed notice only when `gst-launch-1.0` is absent (`.ci/run` installs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn have_gstreamer() -> bool {
    Command::new("gst-launch-1.0")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn gst(args: &str, log: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec gst-launch-1.0 {args}"))
        .stdout(Stdio::from(
            std::fs::File::create(log.with_extension("out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .unwrap()
}

fn wait_timeout(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn gstreamer_speech_through_the_daemon_echo_bot_comes_back() {
    if !have_gstreamer() {
        println!(
            "SKIPPED: gst-launch-1.0 not found (install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good)"
        );
        return;
    }
    let dir = temp_dir("gst");
    let (in_wav, out_wav) = (dir.join("in.wav"), dir.join("out.wav"));
    let source = speech(16_000 * 4, 16_000);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&in_wav, spec).unwrap();
    source.iter().for_each(|s| writer.write_sample(*s).unwrap());
    writer.finalize().unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let daemon = runtime.block_on(daemon(&dir));
    let gateway_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Two pipelines: the sender's socket is not the receiver's; strict RTP takes packets from `source` only.
    let send_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let session = runtime.block_on(create_session(
        &daemon,
        json!({"bot": "echo", "rtp": {"remote": format!("127.0.0.1:{gateway_port}"), "source": format!("127.0.0.1:{send_port}"), "payloadType": 96}}),
    ));
    let rtp_port: std::net::SocketAddr = session["rtp"]["local"].as_str().unwrap().parse().unwrap();

    let mut receiver = gst(
        &format!(
            "-e udpsrc address=127.0.0.1 port={gateway_port} \
             caps='application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int)96' \
             ! rtpjitterbuffer latency=50 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! wavenc ! filesink location={}",
            out_wav.display()
        ),
        &dir.join("receiver"),
    );
    std::thread::sleep(Duration::from_millis(700));
    let mut sender = gst(
        &format!(
            "filesrc location={} ! wavparse ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! opusenc frame-size=20 bitrate=32000 audio-type=voice \
             ! rtpopuspay pt=96 ! udpsink host=127.0.0.1 port={} bind-address=127.0.0.1 bind-port={send_port}",
            in_wav.display(),
            rtp_port.port()
        ),
        &dir.join("sender"),
    );
    assert!(
        wait_timeout(&mut sender, Duration::from_secs(20)),
        "sender did not finish; logs in {}",
        dir.display()
    );
    std::thread::sleep(Duration::from_millis(700));
    let stats: serde_json::Value =
        runtime.block_on(async { session_stats(&daemon, &session).await });
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(receiver.id().to_string())
        .status();
    assert!(
        wait_timeout(&mut receiver, Duration::from_secs(10)),
        "receiver did not stop"
    );
    runtime.block_on(daemon.shutdown());

    let out: Vec<i16> = hound::WavReader::open(&out_wav)
        .unwrap_or_else(|e| panic!("no WAV from the receiver ({e}); logs in {}", dir.display()))
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    let (_, lag) = best_correlation(&source, &out, 16_000);
    let windowed = windowed_correlation(&source, &out, lag);
    println!(
        "gstreamer through the daemon: {} packets in, {} out; {:.2} s back; lag {:.1} ms; windowed correlation {windowed:.3}",
        stats["stats"]["packetsReceived"],
        stats["stats"]["packetsSent"],
        out.len() as f64 / 16_000.0,
        lag as f64 / 16.0
    );
    assert!(
        stats["stats"]["packetsReceived"].as_u64().unwrap() >= 190,
        "{stats}"
    );
    // GStreamer's 48 kHz hybrid Opus, our decode at 16 kHz, our SILK encode, GStreamer's decode: still the same speech.
    assert!(
        windowed > 0.5,
        "windowed correlation {windowed:.3}; logs in {}",
        dir.display()
    );
    // (The lag is not a latency: the daemon sends comfort silence to the configured remote from session start, so
    // the receiver's WAV begins before GStreamer's sender does.)
}
