//! Interoperability with real third-party software: GStreamer sends a speech-like WAV as Opus RTP to a
//! session's RTP/UDP endpoint; the session side (here: the pipeline's Opus codec plus our wire crate, standing in
//! for the media pipeline) decodes, re-encodes and sends it back with its own SSRC, sequence numbers and
//! timestamps; a second GStreamer pipeline writes what it receives to a WAV. The received audio must
//! correlate with the source after removing the codec delay, and the timing must be sane.
//!
//! The pipelines are the reference ones documented in proto/SPEC.md §7. Skipped (with a printed notice) only
//! when `gst-launch-1.0` is not installed; `.ci/run` installs it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mediaproc_net::{RtpUdpConfig, RtpUdpSocket, RxEvent};
use mediaproc_pipeline::{EncoderSettings, OpusDecoder, OpusEncoder, SampleRate};
use mediaproc_wire::RtpPacket;

const RATE: u32 = 16_000;
const SECONDS: f64 = 4.0;
const PT: u8 = 96;

fn have_gstreamer() -> bool {
    Command::new("gst-launch-1.0")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Harmonics of a moving pitch with a syllable-like amplitude envelope and a pause: speech-like enough for
/// Opus in voice mode, and deterministic.
fn speech_like() -> Vec<i16> {
    let n = (f64::from(RATE) * SECONDS) as usize;
    let mut phase = 0.0f64;
    let tau = std::f64::consts::TAU;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let f0 = 140.0 + 40.0 * (tau * 0.7 * t).sin() + 15.0 * (tau * 2.3 * t).sin();
            phase += tau * f0 / f64::from(RATE);
            let mut s = 0.0;
            for k in 1..=12 {
                let f = f0 * k as f64;
                // Two broad formant-like resonances.
                let w = 1.0 / (1.0 + ((f - 600.0) / 250.0).powi(2))
                    + 0.6 / (1.0 + ((f - 1700.0) / 400.0).powi(2));
                s += w * (k as f64 * phase).sin();
            }
            let syllables = (tau * 3.3 * t).sin().max(0.0).powf(0.6);
            let phrase = if (1.7..2.1).contains(&t) { 0.0 } else { 1.0 };
            (s * syllables * phrase * 6000.0).clamp(-32000.0, 32000.0) as i16
        })
        .collect()
}

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Normalized cross-correlation of `b` against `a` at lag `lag` (b delayed by `lag` samples).
fn ncc(a: &[i16], b: &[i16], lag: isize, start: usize, len: usize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for i in start..start + len {
        let j = i as isize + lag;
        if j < 0 || j as usize >= b.len() || i >= a.len() {
            continue;
        }
        let (x, y) = (f64::from(a[i]), f64::from(b[j as usize]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

struct WorkerReport {
    received: usize,
    arrival_span: Duration,
    latency_us: Vec<u64>,
}

/// The session side, as a media worker drives its socket: read what is queued, decode each arriving Opus packet,
/// re-encode, packetize with our own SSRC/seq/ts and send at once.
fn worker(mut s: RtpUdpSocket, origin: Instant, stop: Arc<AtomicBool>) -> WorkerReport {
    let rate = SampleRate::new(48_000).unwrap();
    let mut dec = OpusDecoder::new(rate).unwrap();
    let mut enc = OpusEncoder::new(rate, EncoderSettings::default()).unwrap();
    let mut pcm = vec![0i16; 960];
    let mut opus = vec![0u8; 1275];
    let mut inbuf = vec![0u8; 1500];
    let mut outbuf = vec![0u8; 1500];
    let (mut seq, mut ts, ssrc) = (0x1234u16, 0x5678_0000u32, 0x4d50_0001u32);
    let mut first = None;
    let mut last = 0u64;
    let mut report = WorkerReport {
        received: 0,
        arrival_span: Duration::ZERO,
        latency_us: Vec::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        let (len, arrival) = match s.recv(origin.elapsed(), &mut inbuf) {
            RxEvent::Packet { len, arrival } => (len, arrival.as_nanos() as u64),
            RxEvent::Consumed => continue,
            RxEvent::Empty => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let p = RtpPacket::parse(&inbuf[..len]).unwrap();
        let samples = opusic_c::utils::get_nb_samples(p.payload, opusic_c::SampleRate::Hz48000);
        assert_eq!(samples, Ok(960), "GStreamer sends 20 ms frames");
        dec.decode(p.payload, &mut pcm).unwrap();
        let m = enc.encode(&pcm, &mut opus).unwrap();
        let out = RtpPacket::new(PT, seq, ts, ssrc, &opus[..m]);
        let len = out.write(&mut outbuf).unwrap();
        let now = origin.elapsed();
        assert!(
            s.send(&outbuf[..len], now, now),
            "{:?}",
            s.stats().snapshot()
        );
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
        report.received += 1;
        first.get_or_insert(arrival);
        last = arrival;
        let now = origin.elapsed().as_nanos() as u64;
        report.latency_us.push(now.saturating_sub(arrival) / 1000);
    }
    report.arrival_span = Duration::from_nanos(last - first.unwrap_or(last));
    report
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("mediaproc-gst-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn gstreamer_opus_rtp_round_trip() {
    if !have_gstreamer() {
        println!(
            "SKIPPED gstreamer_opus_rtp_round_trip: gst-launch-1.0 not found (install gstreamer1.0-tools \
             gstreamer1.0-plugins-base gstreamer1.0-plugins-good)"
        );
        return;
    }
    let dir = scratch_dir();
    let (in_wav, out_wav) = (dir.join("in.wav"), dir.join("out.wav"));
    let source = speech_like();
    write_wav(&in_wav, &source);

    let gw_port = free_udp_port();
    // Two pipelines: the sender's socket is not the receiver's. Strict RTP takes packets only from the
    // configured source, so the sender binds a known port.
    let send_port = free_udp_port();
    let origin = Instant::now();
    let session = RtpUdpSocket::bind(
        &RtpUdpConfig {
            remote: Some(format!("127.0.0.1:{gw_port}").parse().unwrap()),
            source: Some(format!("127.0.0.1:{send_port}").parse().unwrap()),
            ..RtpUdpConfig::opus("127.0.0.1:0".parse().unwrap(), PT)
        },
        origin.elapsed(),
    )
    .unwrap();
    let stats = session.stats().clone();
    let mp_port = session.local_addr().port();

    let mut receiver = gst(
        &format!(
            "-e udpsrc address=127.0.0.1 port={gw_port} \
             caps='application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int){PT}' \
             ! rtpjitterbuffer latency=50 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! wavenc ! filesink location={}",
            out_wav.display()
        ),
        &dir.join("receiver"),
    );
    std::thread::sleep(Duration::from_millis(700));

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || worker(session, origin, stop))
    };
    let started = Instant::now();
    let mut sender = gst(
        &format!(
            "filesrc location={} ! wavparse ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! opusenc frame-size=20 bitrate=32000 audio-type=voice \
             ! rtpopuspay pt={PT} ! udpsink host=127.0.0.1 port={mp_port} bind-address=127.0.0.1 bind-port={send_port}",
            in_wav.display()
        ),
        &dir.join("sender"),
    );
    assert!(
        wait_timeout(&mut sender, Duration::from_secs(20)),
        "sender pipeline did not finish"
    );
    let send_time = started.elapsed();
    assert!(
        sender.wait().unwrap().success(),
        "sender pipeline failed, see {}",
        dir.display()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let report = w.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(receiver.id().to_string())
        .status();
    assert!(
        wait_timeout(&mut receiver, Duration::from_secs(10)),
        "receiver pipeline did not stop"
    );

    let out: Vec<i16> = hound::WavReader::open(&out_wav)
        .unwrap_or_else(|e| panic!("no WAV from the receiver ({e}); logs in {}", dir.display()))
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();

    // Correlate over the middle of the signal; search lags from -20 ms to +300 ms (codec delays).
    let (start, len) = (RATE as usize / 2, RATE as usize * 2);
    let (best_lag, best) = (-320isize..4800)
        .map(|lag| (lag, ncc(&source, &out, lag, start, len)))
        .fold((0, f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
    let full = ncc(&source, &out, best_lag, 0, source.len());
    let mut lat = report.latency_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let st = stats.snapshot();
    println!(
        "gstreamer interop: source {:.2} s, received {} packets over {:.3} s (sender ran {:.2} s), sent {}; \
         out.wav {:.2} s; best lag {:.1} ms; correlation {best:.3} (middle) {full:.3} (whole); \
         jitter {} us; session decode+encode+send latency p50 {} us p99 {} us",
        SECONDS,
        report.received,
        report.arrival_span.as_secs_f64(),
        send_time.as_secs_f64(),
        st.tx_packets,
        out.len() as f64 / f64::from(RATE),
        best_lag as f64 * 1000.0 / f64::from(RATE),
        st.jitter_us,
        pct(0.5),
        pct(0.99),
    );

    let expected = (SECONDS / 0.02) as usize;
    assert!(
        (expected * 9 / 10..=expected * 11 / 10).contains(&report.received),
        "received {} packets, expected about {expected}",
        report.received
    );
    assert_eq!(st.rx_malformed + st.rx_unexpected, 0);
    assert_eq!(
        st.tx_packets as usize, report.received,
        "every decoded frame was sent back"
    );
    // Real-time pacing: the packets arrived spread over the signal's duration, not in a burst.
    let span = report.arrival_span.as_secs_f64();
    assert!(
        (SECONDS * 0.8..SECONDS * 1.25).contains(&span),
        "arrival span {span:.3} s"
    );
    let out_secs = out.len() as f64 / f64::from(RATE);
    assert!(
        (SECONDS - 0.5..SECONDS + 0.5).contains(&out_secs),
        "received WAV lasts {out_secs:.2} s"
    );
    assert!(
        (0..=1600).contains(&best_lag),
        "codec delay {best_lag} samples is implausible"
    );
    assert!(
        best > 0.8,
        "correlation {best:.3} is too low: the audio did not survive the round trip"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
