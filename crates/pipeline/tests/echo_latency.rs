//! Clean-path echo latency of the pipeline alone, in simulated time: a far end sends 6 s of a speech-like signal
//! that is never quiet, as Opus packets arriving 5 ms after each 20 ms frame boundary (a perfectly clean path); an
//! in-worker echo bot hands every inbound frame straight back; the far end decodes what the session sends and the
//! lag is found by cross-correlation with the source. The lag covers everything between the far end's encoder input
//! and its decoder output: the 5 ms arrival offset, the jitter buffer, the ticks, and the Opus delay of both
//! generations.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::*;
use mediaproc_pipeline::{
    FRAME_DURATION as FRAME, JitterStats, MediaSession, Output, ReceivedAudio, RtpPacketInfo,
    START_HOLD_PACKETS, SampleRate, SessionConfig,
};

/// Where packet `n` arrives, relative to its frame boundary (`n × 20 ms`).
const ARRIVAL_OFFSET_MS: u64 = 5;
/// The source plays for this long...
const SOURCE_SECONDS: usize = 6;
/// ... in a simulated call this long.
const RUN_MS: u64 = 7000;

/// How the driver hands the bot's frames to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// `handle_tick`, then the bot: its frame goes out with the next tick.
    Tick,
    /// `handle_receive`, the bot, `handle_send`: its frame goes out within the same tick.
    Split,
}

struct EchoRun {
    /// Lag of the echo behind the source over the whole source, in ms, and its correlation.
    lag_ms: f64,
    correlation: f64,
    /// The same over the last 1 s of the source (the jitter buffer has converged).
    steady_lag_ms: f64,
    steady_correlation: f64,
    stats: JitterStats,
    /// (time, current delay ms, target delay ms) at each tick.
    delays: Vec<(Duration, u32, u32)>,
}

fn echo(driver: Driver, initial_delay_frames: u16) -> EchoRun {
    let mut cfg = SessionConfig::default();
    cfg.jitter.initial_delay_frames = initial_delay_frames;
    let (mut media, mut bot) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    let voiced = vowel(16_000 * SOURCE_SECONDS, 16_000);
    let packets = opus_payloads(&voiced, SampleRate::HZ_16000);
    let mut frame = ReceivedAudio::new(SampleRate::HZ_16000);
    let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut delays = Vec::new();
    for ms in 0..RUN_MS {
        let now = Duration::from_millis(ms);
        let n = (ms / 20) as usize;
        if ms % 20 == ARRIVAL_OFFSET_MS && n < packets.len() {
            let rtp = RtpPacketInfo {
                ssrc: 0x1234,
                sequence: n as u16,
                timestamp: n as u32 * 960,
                marker: n == 0,
                payload_type: 111,
                audio_level: None,
                source_id: Some(1),
            };
            media.handle_packet(now, &rtp, &packets[n]);
        }
        while media.poll_timeout() <= now {
            match driver {
                Driver::Tick => {
                    if !media.handle_tick(now) {
                        break;
                    }
                    while bot.inbound.pop(&mut frame) {
                        bot.outbound.push(frame.mixed()).unwrap();
                    }
                }
                Driver::Split => {
                    if !media.handle_receive(now) {
                        break;
                    }
                    while bot.inbound.pop(&mut frame) {
                        bot.outbound.push(frame.mixed()).unwrap();
                    }
                    assert!(media.handle_send(now));
                }
            }
            while let Some(o) = media.poll_output() {
                if let Output::Transmit(t) = o {
                    out.push((t.sequence, t.payload.to_vec()));
                }
            }
            if let Some(s) = media.stream_stats(1) {
                delays.push((now, s.current_delay_ms, s.target_delay_ms));
            }
        }
    }
    // The session's first packet is due at 0 ms, like the source's first frame.
    let received = decode_in_order(&out, SampleRate::HZ_16000);
    let (lag, correlation) = best_lag(&voiced, &received, 16_000);
    let from = voiced.len() - 16_000;
    let (steady_lag, steady_correlation) = best_lag(&voiced[from..], &received[from..], 16_000);
    EchoRun {
        lag_ms: lag as f64 / 16.0,
        correlation,
        steady_lag_ms: steady_lag as f64 / 16.0,
        steady_correlation,
        stats: media.stream_stats(1).unwrap(),
        delays,
    }
}

/// Budget on this path: the 1-frame jitter buffer (the packet arriving 5 ms after its frame boundary plays at the
/// next tick, 20 ms after that boundary) plus the Opus delay of two generations (≈ 17.5 ms); 20 ms more when the
/// bot's reply waits for the next tick.
#[test]
fn clean_path_echo_latency() {
    let default_initial = SessionConfig::default().jitter.initial_delay_frames;
    assert_eq!(default_initial, 2);
    // The defaults (the buffer starts at 2 frames and comes down by itself), then a buffer configured to start at its
    // 1-frame minimum.
    for (driver, initial) in [
        (Driver::Split, default_initial),
        (Driver::Tick, default_initial),
        (Driver::Split, 1),
    ] {
        let r = echo(driver, initial);
        let converged = r
            .delays
            .iter()
            .find(|d| d.1 <= 20 && d.2 == 20)
            .map(|d| d.0)
            .unwrap();
        let target1 = r.delays.iter().find(|d| d.2 == 20).map(|d| d.0).unwrap();
        println!(
            "clean-path echo ({driver:?}, initial {initial} frames): lag {:.1} ms (correlation {:.3}) over {SOURCE_SECONDS} s, \
             {:.1} ms ({:.3}) over the last 1 s; target 1 frame from {target1:?}, level from {converged:?}; {:?}",
            r.lag_ms, r.correlation, r.steady_lag_ms, r.steady_correlation, r.stats
        );
        // The target is at its 1-frame minimum as soon as the start hold allows (START_HOLD_PACKETS = 3 s when
        // starting higher) and the level follows within 1.5 s, with one drop (the signal is never quiet: a trough,
        // or the least energetic frame of a window). Nothing else is touched.
        let hold = if initial > 1 {
            FRAME * START_HOLD_PACKETS
        } else {
            Duration::ZERO
        };
        assert!(target1 <= hold + 2 * FRAME, "{target1:?}");
        assert!(
            converged <= target1 + Duration::from_millis(1500),
            "{converged:?}"
        );
        let drops = u64::from(initial > 1);
        assert_eq!(
            (r.stats.accelerated, r.stats.stretched, r.stats.late),
            (drops, 0, 0),
            "{:?}",
            r.stats
        );
        assert!(
            r.delays
                .iter()
                .filter(|d| d.0 > converged && d.0 < Duration::from_secs(SOURCE_SECONDS as u64))
                .all(|d| d.1 <= 20),
            "stays at 1 frame"
        );
        assert!(r.steady_correlation > 0.45, "{}", r.steady_correlation);
        let limit = match driver {
            Driver::Tick => 60.0,
            Driver::Split => 40.0,
        };
        assert!(
            r.steady_lag_ms <= limit,
            "{driver:?}: {} ms",
            r.steady_lag_ms
        );
        if initial == 1 {
            // No drop: the whole run has the steady lag.
            assert!((r.lag_ms - r.steady_lag_ms).abs() < 1.0, "{} ms", r.lag_ms);
        }
    }
}

#[test]
fn split_tick_halves() {
    let (mut media, mut bot) = MediaSession::new(SessionConfig::default(), Duration::ZERO).unwrap();
    let ms = Duration::from_millis;
    assert!(media.handle_receive(ms(0)));
    // Receive half ran; it does not run twice, and the tick stays due until its send half ran.
    assert!(!media.handle_receive(ms(0)));
    assert_eq!(media.poll_timeout(), ms(0));
    bot.outbound.push(&[1000i16; 320]).unwrap();
    assert!(media.handle_send(ms(0)));
    // The frame queued between the halves went out in this tick.
    assert!(matches!(media.poll_output(), Some(Output::Transmit(t)) if t.payload.len() > 1));
    assert_eq!(media.poll_timeout(), ms(20));
    assert!(!media.handle_send(ms(19)), "not due");
    // `handle_send` alone runs the whole tick; `handle_tick` is both halves.
    assert!(media.handle_send(ms(20)));
    assert!(media.handle_tick(ms(40)));
    assert_eq!(media.stats().ticks, 3);
    assert_eq!(media.stats().pacer.packets, 3);
}
