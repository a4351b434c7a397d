//! Deterministic simulated-time tests of the playout (jitter buffer, sync buffer and time-scale modification): a
//! voiced speech-like source through a simulated network into a `MediaSession`, scored with a time-warp-aware
//! figure: per 40 ms window (every 20 ms) the correlation with the clean decode at the lag searched to the sample,
//! the largest step of that lag between consecutive voiced windows (a whole dropped or repeated frame is a 20 ms
//! step; time-scale modification moves by one pitch period, 2.5–15 ms), and output frames that are silent while the
//! source speaks. No wall clock anywhere.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::*;
use mediaproc_pipeline::{EncoderSettings, JitterConfig, JitterStats, MediaSession, SampleRate};

fn source(dtx: bool, noise_rms: f64) -> Source {
    Source::with_noise(
        SampleRate::HZ_16000,
        20,
        EncoderSettings {
            complexity: 0,
            dtx,
            // A far end with in-band FEC for 5 % loss, as WebRTC senders have.
            inband_fec: true,
            expected_loss_percent: 5,
            ..EncoderSettings::default()
        },
        noise_rms,
    )
}

/// Runs `net` for `secs` and scores the bot's audio from 4 s on (after the jitter buffer's start hold).
fn scenario(
    name: &str,
    src: &Source,
    net: NetConfig,
    seed: u64,
    secs: u64,
    max_silent: usize,
) -> (PlayoutReport, JitterStats, Trace) {
    let (session, trace) = run(src, net, seed, Duration::from_secs(secs), true);
    let stats = session.stream_stats(7).unwrap();
    let rep = playout_report(&src.decoded, 320, &trace.audio, 4 * 16_000);
    println!("{name}: {rep:?}; {stats:?}");
    assert_eq!(trace.missing, 0, "{name}: a tick without a frame");
    assert!(
        rep.windows as u64 > secs * 20,
        "{name}: voiced windows {}",
        rep.windows
    );
    assert!(
        rep.silent_while_speaking <= max_silent,
        "{name}: {} silent frames while the source speaks",
        rep.silent_while_speaking
    );
    assert!(
        rep.max_lag_step_ms < 20.0,
        "{name}: the lag stepped by {} ms (a whole frame) while speech was active",
        rep.max_lag_step_ms
    );
    (rep, stats, trace)
}

/// Runs `net` for 30 s over speech without DTX and scores it from 4 s on (after the jitter buffer's start hold): the
/// session (for its statistics), the trace, the playout report and the time-scale operations.
fn speech_30s(net: NetConfig, seed: u64) -> (MediaSession, Trace, PlayoutReport, TimeScaleOps) {
    let src = source(false, 0.0);
    let (session, trace) = run(&src, net, seed, Duration::from_secs(30), true);
    let rep = playout_report(&src.decoded, 320, &trace.audio, 4 * 16_000);
    let ops = timescale_ops(&trace, 320, 200);
    (session, trace, rep, ops)
}

#[test]
fn clean_path() {
    let (rep, s, trace) = scenario("clean", &source(false, 0.0), NetConfig::default(), 1, 20, 0);
    assert!(rep.mean > 0.999 && rep.p10 > 0.99, "{rep:?}");
    assert_eq!(
        (s.concealed, s.late, s.lost, s.decelerated_ms),
        (0, 0, 0, 0)
    );
    // The initial 2 frames come down to 1 once, by time-scaling.
    assert!((15..=25).contains(&s.accelerated_ms), "{s:?}");
    assert!(
        trace.delays[250..].iter().all(|d| d.2 == 20),
        "target 1 frame"
    );
}

#[test]
fn paired_bursts_every_40_ms() {
    let net = NetConfig {
        pairs: true,
        ..NetConfig::default()
    };
    let (rep, s, trace) = scenario("pairs", &source(false, 0.0), net, 2, 30, 0);
    assert!(rep.mean > 0.999 && rep.p10 > 0.99, "{rep:?}");
    assert_eq!((s.concealed, s.late, s.underruns), (0, 0, 0), "{s:?}");
    // A steady target: one value from 4 s on, no oscillation of the playout.
    let targets: Vec<u32> = trace.delays[200..].iter().map(|d| d.2).collect();
    assert!(
        targets.iter().all(|&t| t == targets[0]),
        "target moves: {:?}",
        &targets[..50]
    );
    assert!(targets[0] <= 40, "target {} ms", targets[0]);
    assert!(s.accelerated_ms + s.decelerated_ms <= 60, "{s:?}");
    // What the packets actually wait: half of them a tick, half only the tick phase.
    assert!(s.packet_wait_ms <= 25, "{s:?}");
}

#[test]
fn five_percent_random_loss() {
    let net = NetConfig {
        loss: Loss::Random(0.05),
        ..NetConfig::default()
    };
    let (rep, s, _) = scenario("5 % loss", &source(false, 0.0), net, 3, 30, 0);
    assert!(rep.mean > 0.95 && rep.p10 > 0.85, "{rep:?}");
    assert!(
        s.lost > 40 && s.fec_recovered + s.concealed >= s.lost,
        "{s:?}"
    );
}

#[test]
fn ten_percent_bursty_loss() {
    // Gilbert–Elliott: ≈ 11.8 % of packets in the bad state, 85 % lost there ≈ 10 % loss in bursts of ≈ 3.
    let net = NetConfig {
        loss: Loss::Bursty(0.04, 0.3, 0.85),
        ..NetConfig::default()
    };
    // Opus concealment fades out over a long burst (≈ 100 ms and more): a frame or two of the 1500 may be near
    // silence while the source speaks (measured: 1).
    let (rep, s, _) = scenario("10 % bursty loss", &source(false, 0.0), net, 4, 30, 2);
    assert!(rep.mean > 0.9 && rep.p10 > 0.7, "{rep:?}");
    assert!(s.lost > 80 && s.merges > 0, "{s:?}");
}

/// A browser's sender as Chromium sends on a busy 2-core host (loopback, captured with tcpdump): every packet within
/// a millisecond of the fastest, except a group of five every 5 s, 20, 7, 19, 6 and 17 ms late.
fn browser_stalls() -> &'static [f64] {
    let mut t = vec![0.0; 250];
    for (i, late) in [20.0, 7.0, 19.0, 6.0, 17.0].into_iter().enumerate() {
        t[120 + i] = late;
    }
    for i in (3..250).step_by(7) {
        if t[i] == 0.0 {
            t[i] = 1.0;
        }
    }
    Box::leak(t.into_boxed_slice())
}

#[test]
fn browser_sender_stalls_are_concealed_within_the_late_allowance() {
    let net = NetConfig {
        transit_trace: Some(browser_stalls()),
        ..NetConfig::default()
    };
    let src = source(false, 0.0);
    let play = |allowance: u8| {
        let jitter = JitterConfig {
            late_allowance_packets: allowance,
            ..JitterConfig::default()
        };
        let (session, trace) = run_with(&src, net, 31, Duration::from_secs(30), true, jitter);
        let s = session.stream_stats(7).unwrap();
        let rep = playout_report(&src.decoded, 320, &trace.audio, 4 * 16_000);
        let waits = &trace.stats[250..];
        let wait = waits
            .iter()
            .map(|s| f64::from(s.packet_wait_ms))
            .sum::<f64>()
            / waits.len() as f64;
        println!("late allowance {allowance}: packet wait {wait:.1} ms, {rep:?}; {s:?}");
        assert_eq!(trace.missing, 0, "a tick without a frame");
        (wait, rep, s)
    };
    // Waiting for every packet: each stall group holds the frames of the next 5 s up by its latest packet.
    let (held, rep, s) = play(0);
    assert!(rep.mean > 0.999, "{rep:?}");
    assert_eq!((s.underruns, s.late), (0, 0), "{s:?}");
    // The WebRTC edge's allowance (6 of the last 128): the stalled packets are concealed instead, their audio merged
    // in where it still comes in time, and the frames wait only for the packets on time.
    let (allowed, rep, s) = play(6);
    assert!(
        allowed + 10.0 <= held && allowed <= 8.0,
        "packet wait {allowed:.1} ms with the allowance, {held:.1} ms without"
    );
    assert!(s.underruns > 0, "{s:?}");
    assert!(
        rep.max_lag_step_ms < 20.0,
        "a whole frame dropped or repeated: {rep:?}"
    );
    assert_eq!(rep.silent_while_speaking, 0, "{rep:?}");
    assert!(rep.mean > 0.95, "{rep:?}");
}

fn drift(ppm: f64, seed: u64) {
    let net = NetConfig {
        drift_ppm: ppm,
        jitter_ms: 5.0,
        ..NetConfig::default()
    };
    let (rep, s, trace) = scenario(
        &format!("{ppm} ppm"),
        &source(false, 0.0),
        net,
        seed,
        600,
        0,
    );
    assert!(rep.mean > 0.99 && rep.p10 > 0.97, "{rep:?}");
    // 500 ppm over 10 minutes is 300 ms, absorbed by time-scaling (net of the start-up's 20 ms) without whole
    // frames: nothing concealed, nothing late, the delay bounded.
    let net_ms = s.accelerated_ms as i64 - s.decelerated_ms as i64;
    let expect = (ppm * 0.6) as i64 + 20;
    assert!(
        (net_ms - expect).abs() <= 40,
        "net time-scaling {net_ms} ms, expected ≈ {expect}: {s:?}"
    );
    assert_eq!((s.late, s.underruns), (0, 0), "{s:?}");
    assert!(
        trace.delays.iter().skip(250).all(|d| d.1 <= 60),
        "delay bounded"
    );
}

#[test]
fn sender_clock_500_ppm_fast_for_10_minutes() {
    drift(500.0, 5);
}

#[test]
fn sender_clock_500_ppm_slow_for_10_minutes() {
    drift(-500.0, 6);
}

#[test]
fn dtx_plays_comfort_noise() {
    // Background noise at about -55 dBov: the sender's encoder runs DTX in the pauses and (RFC 7587) sends only every
    // 20th of its comfort packets.
    let src = source(true, 60.0);
    let net = NetConfig {
        dtx: true,
        ..NetConfig::default()
    };
    let (rep, s, trace) = scenario("DTX", &src, net, 7, 30, 0);
    assert!(rep.mean > 0.99, "{rep:?}");
    assert!(s.comfort_noise_ms > 1000, "{s:?}");
    // No digital zeros in the gaps once the stream runs: comfort noise at the background level.
    let zero_frames = trace.audio[16_000..]
        .chunks(320)
        .filter(|f| f.iter().all(|&x| x == 0))
        .count();
    assert_eq!(zero_frames, 0, "{s:?}");
}

/// Runs `net` for 30 s with `seed` and returns the report, the time-scale operations from 4 s on, and the mean and
/// largest delay and the targets from 4 s on.
fn harness_like(net: NetConfig, seed: u64) -> (PlayoutReport, TimeScaleOps, u32, u32, Vec<u32>) {
    let (_, trace, rep, ops) = speech_30s(net, seed);
    let d: Vec<u32> = trace.delays[200..].iter().map(|d| d.1).collect();
    let t: Vec<u32> = trace.delays[200..].iter().map(|d| d.2).collect();
    let avg = d.iter().sum::<u32>() / d.len() as u32;
    let max = *d.iter().max().unwrap();
    println!("seed {seed}: {rep:?} {ops:?} delay avg {avg} max {max}");
    (rep, ops, avg, max, t)
}

#[test]
fn harness_loss_and_jitter_time_scales_speech_sparingly() {
    // The quality harness's loss5 row: 5 % random loss, uniform 0–15 ms jitter (no reordering). Before: 18–20
    // time-scale operations in speech per 26 s (lag steps in the harness); now one period at a time, only for a
    // clear excess, away from concealment (measured 5–6).
    for seed in [11u64, 12] {
        let net = NetConfig {
            loss: Loss::Random(0.05),
            jitter_ms: 15.0,
            ..NetConfig::default()
        };
        let (rep, _, avg, _, _) = harness_like(net, seed);
        assert!(rep.max_lag_step_ms < 20.0, "seed {seed}: {rep:?}");
        assert!(rep.mean > 0.95 && rep.p10 > 0.9, "seed {seed}: {rep:?}");
        assert!(avg <= 60, "seed {seed}: delay {avg} ms");
    }
}

/// The time-scale budget of the case above: at most 8 operations in speech (measured: 0 for both seeds since the
/// playout steers its offset to the on-time envelope and keeps a frame of margin after a loss, so losses are rebuilt
/// from FEC instead of being held as underruns; before that 12).
#[test]
fn harness_loss_and_jitter_time_scale_budget() {
    for seed in [11u64, 12] {
        let net = NetConfig {
            loss: Loss::Random(0.05),
            jitter_ms: 15.0,
            ..NetConfig::default()
        };
        let (_, ops, _, _, _) = harness_like(net, seed);
        assert!(ops.in_speech <= 8, "seed {seed}: {ops:?}");
    }
}

#[test]
fn harness_pairs_keep_a_steady_target_and_no_speech_time_scaling() {
    // ffmpeg-like pairs, clean and with the harness's 15 ms jitter: one target from 4 s on, no period removed from or
    // inserted into speech.
    for (jitter_ms, seed, max_target) in [(0.0, 11u64, 40), (15.0, 12, 60)] {
        let net = NetConfig {
            pairs: true,
            jitter_ms,
            ..NetConfig::default()
        };
        let (rep, ops, avg, _, t) = harness_like(net, seed);
        assert!(t.iter().all(|&x| x == t[0]), "target moves: {:?}", &t[..50]);
        assert!(t[0] <= max_target, "target {} ms", t[0]);
        assert_eq!(ops.in_speech, 0, "{ops:?}");
        assert!(rep.mean > 0.999 && rep.p10 > 0.99, "{rep:?}");
        assert!(avg <= 40, "delay {avg} ms");
    }
}

#[test]
fn chunked_sender_bursts_keep_a_steady_offset() {
    // ffmpeg `-re` reading a 16 kHz WAV: 128 ms chunks, each sent as a burst of 6–7 packets as soon as it is read
    // (the first packet of a burst on time, the others up to 108 ms early). The early packets only fill the buffer:
    // no start-up climb, no time-scaling in speech, and the delay above the on-time envelope stays within a frame
    // and the margin (the buffer level, early packets included, is about 140 ms).
    for (seed, jitter_ms, loss) in [(21u64, 0.0, 0.0), (22, 15.0, 0.05)] {
        let net = NetConfig {
            chunk_ms: 128.0,
            jitter_ms,
            loss: if loss > 0.0 {
                Loss::Random(loss)
            } else {
                Loss::None
            },
            ..NetConfig::default()
        };
        let (rep, ops, _, _, _) = harness_like(net, seed);
        let src = source(false, 0.0);
        let (session, trace) = run(&src, net, seed, Duration::from_secs(30), true);
        let s = session.stream_stats(7).unwrap();
        let env: Vec<u32> = trace.stats[200..]
            .iter()
            .map(|s| s.envelope_delay_ms)
            .collect();
        let env_avg = env.iter().sum::<u32>() / env.len() as u32;
        println!(
            "chunked seed {seed}: envelope delay avg {env_avg} max {:?}; {s:?}",
            env.iter().max()
        );
        assert!(rep.max_lag_step_ms < 20.0, "seed {seed}: {rep:?}");
        assert_eq!(ops.in_speech, 0, "seed {seed}: {ops:?}");
        assert!(rep.mean > 0.97 && rep.p10 > 0.95, "seed {seed}: {rep:?}");
        assert!(env_avg <= 45, "seed {seed}: envelope delay {env_avg} ms");
        if loss == 0.0 {
            assert!(rep.mean > 0.999, "{rep:?}");
            assert_eq!((s.underruns, s.concealed, s.late), (0, 0, 0), "{s:?}");
        } else {
            assert!(
                s.fec_recovered * 10 >= s.lost * 8,
                "FEC rebuilds most losses: {s:?}"
            );
        }
    }
}

#[test]
#[ignore = "diagnostic: prints the ffmpeg-like chunked sender's figures"]
fn diag_chunked_sender() {
    for (seed, loss) in [(21u64, 0.0), (22, 0.05)] {
        let net = NetConfig {
            chunk_ms: 128.0,
            jitter_ms: 15.0 * loss * 20.0,
            loss: if loss > 0.0 {
                Loss::Random(loss)
            } else {
                Loss::None
            },
            ..NetConfig::default()
        };
        let (session, trace, rep, ops) = speech_30s(net, seed);
        let s = session.stream_stats(7).unwrap();
        let t: Vec<u32> = trace.delays.iter().step_by(50).map(|d| d.2).collect();
        println!("chunked loss {loss}: {rep:?} {ops:?} targets/s {t:?}; {s:?}");
    }
}

/// Replays the transit times of a quality-harness run (`PLAYOUT_TRACE=path/arrivals.csv`, leg "in") and prints the
/// playout's figures.
#[test]
#[ignore = "diagnostic: needs PLAYOUT_TRACE"]
fn diag_replay_harness_trace() {
    let Some(path) = std::env::var_os("PLAYOUT_TRACE") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut first: Option<(u16, i64)> = None;
    let mut transit = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[0] != "in" {
            continue;
        }
        let at: f64 = f[1].parse().unwrap();
        let seq: u16 = f[2].parse().unwrap();
        let ts: i64 = f[3].parse().unwrap();
        let (s0, t0) = *first.get_or_insert((seq, ts));
        let n = usize::from(seq.wrapping_sub(s0));
        if n >= transit.len() {
            transit.resize(n + 1, f64::NAN);
        }
        transit[n] = at * 1000.0 - (ts - t0) as f64 / 48.0;
    }
    let min = transit
        .iter()
        .copied()
        .filter(|t| !t.is_nan())
        .fold(f64::MAX, f64::min);
    let transit: &'static [f64] = Box::leak(
        transit
            .iter()
            .map(|t| t - min)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let net = NetConfig {
        transit_trace: Some(transit),
        ..NetConfig::default()
    };
    // With PLAYOUT_SPEECH=source.wav (16 kHz mono 16-bit, the harness's `--keep` copy) the replay plays that speech
    // and PLAYOUT_OUT=out.wav gets what the bot heard (score it with `python3 -m benches.quality.score`).
    let src = match std::env::var_os("PLAYOUT_SPEECH") {
        Some(wav) => {
            let bytes = std::fs::read(wav).unwrap();
            let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
            let pcm: Vec<i16> = bytes[data..]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            Source::from_pcm(
                SampleRate::HZ_16000,
                pcm,
                EncoderSettings {
                    inband_fec: true,
                    expected_loss_percent: 5,
                    ..EncoderSettings::default()
                },
            )
        }
        None => source(false, 0.0),
    };
    let secs = (transit.len() / 50) as u64;
    let (session, trace) = run(&src, net, 1, Duration::from_secs(secs), true);
    let s = session.stream_stats(7).unwrap();
    let rep = playout_report(&src.decoded, 320, &trace.audio, 16_000);
    let ops = timescale_ops(&trace, 320, 50);
    println!("replay: {rep:?} {ops:?}; {s:?}");
    let steps: Vec<String> = trace
        .stats
        .windows(2)
        .enumerate()
        .filter(|(_, w)| {
            w[1].accelerated_ms + w[1].decelerated_ms != w[0].accelerated_ms + w[0].decelerated_ms
        })
        .map(|(i, w)| {
            format!(
                "{:.2}s:{:+}",
                (i + 1) as f64 * 0.02,
                (w[1].decelerated_ms as i64 - w[0].decelerated_ms as i64)
                    - (w[1].accelerated_ms as i64 - w[0].accelerated_ms as i64)
            )
        })
        .collect();
    println!("time-scale ops (s since the bot's first frame: +inserted/-removed ms): {steps:?}");
    // Every tick where the stream lost, rebuilt, concealed, underran, merged or was late: what concealment did.
    let events: Vec<String> = trace
        .stats
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| {
            let d = |f: fn(&JitterStats) -> u64| f(&w[1]) - f(&w[0]);
            let ev = [
                ("lost", d(|s| s.lost)),
                ("fec", d(|s| s.fec_recovered)),
                ("under", d(|s| s.underruns)),
                ("late", d(|s| s.late)),
                ("concms", d(|s| s.concealed_ms)),
                ("merge", d(|s| s.merges)),
                ("accms", d(|s| s.accelerated_ms)),
                ("decms", d(|s| s.decelerated_ms)),
            ];
            let ev: Vec<String> = ev
                .iter()
                .filter(|e| e.1 > 0)
                .map(|e| format!("{}{}", e.0, e.1))
                .collect();
            (!ev.is_empty()).then(|| format!("{:.2}s:{}", (i + 1) as f64 * 0.02, ev.join("/")))
        })
        .collect();
    println!("events: {events:?}");
    if let Some(out) = std::env::var_os("PLAYOUT_OUT") {
        let mut w = Vec::with_capacity(44 + 2 * trace.audio.len());
        let n = (2 * trace.audio.len()) as u32;
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&(36 + n).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&16_000u32.to_le_bytes());
        w.extend_from_slice(&32_000u32.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&n.to_le_bytes());
        for s in &trace.audio {
            w.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(out, w).unwrap();
    }
}

/// The receiving host stalled now and then (a loaded CPU descheduling the daemon's threads), clean path, speech.
fn stalled(stall: Stall, seed: u64) -> (PlayoutReport, TimeScaleOps, JitterStats, u32) {
    let net = NetConfig {
        stall,
        ..NetConfig::default()
    };
    let (session, trace, rep, ops) = speech_30s(net, seed);
    let s = session.stream_stats(7).unwrap();
    let env: Vec<u32> = trace.stats[200..]
        .iter()
        .map(|s| s.envelope_delay_ms)
        .collect();
    let env_avg = env.iter().sum::<u32>() / env.len() as u32;
    println!(
        "stall {stall:?}: {rep:?} {ops:?} envelope delay avg {env_avg}; {:?}; {s:?}",
        session.stats()
    );
    (rep, ops, s, env_avg)
}

#[test]
#[ignore = "diagnostic: prints the playout's figures under host stalls"]
fn diag_host_stalls() {
    for (net, worker) in [(true, true), (false, true), (true, false)] {
        for len_ms in [30.0, 90.0, 150.0] {
            stalled(
                Stall {
                    first_ms: 6_013.0,
                    every_ms: 3_000.0,
                    len_ms,
                    net,
                    worker,
                },
                31,
            );
        }
    }
}

/// A loaded host (the quality harness's overload collapse): the daemon's network thread and worker descheduled
/// together for 90 ms every 3 s. The packets that arrive meanwhile are stamped at the stall's end, after the
/// deadlines of the ticks that then run late in a bunch and still play them. Before the fix their stamps raised the
/// on-time envelope (and its 5 s peak) by the stall: 1.1 s of preemptive expand and 1.1 s of accelerate in 26 s,
/// 39 periods inserted into or removed from speech. Now the timeline does not move.
#[test]
fn host_stalls_with_late_ticks_leave_the_timeline_alone() {
    for len_ms in [30.0, 90.0] {
        let stall = Stall {
            first_ms: 6_013.0,
            every_ms: 3_000.0,
            len_ms,
            net: true,
            worker: true,
        };
        let net = NetConfig {
            stall,
            ..NetConfig::default()
        };
        let (rep, s, trace) = scenario("host stalls", &source(false, 0.0), net, 31, 30, 0);
        let ops = timescale_ops(&trace, 320, 200);
        assert!(rep.mean > 0.999 && rep.p10 > 0.99, "{len_ms} ms: {rep:?}");
        assert_eq!(ops.in_speech, 0, "{len_ms} ms: {ops:?}");
        assert_eq!((s.underruns, s.concealed, s.late), (0, 0, 0), "{s:?}");
        // The start-up's one frame down and nothing else.
        assert!(
            s.accelerated_ms <= 25 && s.decelerated_ms <= 5,
            "{len_ms} ms: {s:?}"
        );
    }
}

/// A stall longer than `MAX_CATCH_UP_TICKS` (150 ms every 3 s): the session skips the missed ticks, and the
/// streams play their audio out unheard, so after each stall the bot hears the far end at the delay it had, with a
/// gap (on the bot's time axis) as after a lost burst. Before, the skipped ticks' audio stayed in the buffers: the
/// bot heard it 140 ms late (a lag step of 7 frames) and the playout time-scaled it back over the next seconds.
#[test]
fn host_stalls_beyond_catch_up_skip_the_audio_too() {
    let stall = Stall {
        first_ms: 6_013.0,
        every_ms: 3_000.0,
        len_ms: 150.0,
        net: true,
        worker: true,
    };
    let net = NetConfig {
        stall,
        ..NetConfig::default()
    };
    let (session, _, rep, ops) = speech_30s(net, 32);
    let s = session.stream_stats(7).unwrap();
    let stats = session.stats();
    println!("skip: {rep:?} {ops:?} {stats:?} {s:?}");
    assert!(stats.skipped_ticks >= 8 * 6, "{stats:?}");
    assert!(rep.max_lag_step_ms < 20.0, "{rep:?}");
    // The gaps themselves (7 frames per stall, 8 stalls) and nothing else.
    assert!(rep.silent_while_speaking <= 8 * 7, "{rep:?}");
    assert!(rep.p10 > 0.99, "{rep:?}");
    assert_eq!(ops.in_speech, 0, "{ops:?}");
    assert!(s.accelerated_ms <= 25 && s.decelerated_ms <= 5, "{s:?}");
}
