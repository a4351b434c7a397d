//! MediaSession behaviour: pacing, send status, clear/mark, backpressure, inbound overflow, speakers, unmixed audio,
//! tick phases, non-Opus rates, untrusted input.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use mediaproc_pipeline::{
    EncoderSettings, Error, Event, INBOUND_RESUME_FRAMES, MAX_PAYLOAD, MediaSession, OpusEncoder,
    Output, ReceivedAudio, RtpPacketInfo, SampleRate, SendStatus, SessionConfig,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn tone(rate: SampleRate, n: usize, freq: f32, amp: f32) -> Vec<i16> {
    let spf = rate.samples_per_frame();
    (0..spf)
        .map(|i| {
            (((n * spf + i) as f32 * 2.0 * std::f32::consts::PI * freq / rate.hz() as f32).sin()
                * amp) as i16
        })
        .collect()
}

/// Drains outputs of one tick: (packets, events).
fn drain(s: &mut MediaSession) -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut p = Vec::new();
    let mut e = Vec::new();
    while let Some(o) = s.poll_output() {
        match o {
            Output::Transmit(t) => p.push(t.payload.to_vec()),
            Output::Event(ev) => e.push(ev),
        }
    }
    (p, e)
}

#[test]
fn pacing_status_marks_and_clear() {
    let cfg = SessionConfig {
        outbound_capacity_frames: 20,
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, ms(100)).unwrap();
    assert_eq!(s.poll_timeout(), ms(100));
    assert!(!s.handle_tick(ms(99)), "not due yet");
    // Silent bot: one silence packet per tick, no encoder, status inactive.
    for n in 0..3 {
        assert!(s.handle_tick(ms(100 + 20 * n)));
        let (p, e) = drain(&mut s);
        assert_eq!(p, vec![vec![0x48]]);
        assert!(e.is_empty());
    }
    assert_eq!(s.send_status(), SendStatus::Inactive);
    assert_eq!(s.stats().pacer.underruns, 0);
    // Backpressure: exactly the capacity fits.
    let f = tone(SampleRate::HZ_16000, 0, 300.0, 8000.0);
    for i in 0..20 {
        bot.outbound.push(&f).unwrap();
        if i == 1 {
            bot.outbound.mark("two").unwrap();
        }
    }
    assert!(matches!(
        bot.outbound.push(&f),
        Err(Error::OutboundFull {
            capacity_frames: 20
        })
    ));
    bot.outbound.mark("end").unwrap();
    // First tick with audio: status event, an encoded packet.
    s.handle_tick(ms(160));
    let (p, e) = drain(&mut s);
    assert_eq!(p.len(), 1);
    assert!(p[0].len() > 2);
    assert_eq!(e, vec![Event::SendStatusChanged(SendStatus::Active)]);
    // Second frame sent: mark "two" reported after its packet.
    s.handle_tick(ms(180));
    let (p, e) = drain(&mut s);
    assert_eq!(p.len(), 1);
    assert!(
        matches!(e.as_slice(), [Event::Mark { name, cleared: false }] if name.as_str() == "two")
    );
    // Barge-in: the 18 frames still queued are gone within one tick, the pending mark comes back as cleared.
    bot.outbound.clear();
    s.handle_tick(ms(200));
    let (p, e) = drain(&mut s);
    assert_eq!(p, vec![vec![0x48]], "silence right after clear");
    assert!(
        matches!(e.as_slice(), [Event::Mark { name, cleared: true }] if name.as_str() == "end")
    );
    assert_eq!(s.stats().frames_cleared, 18);
    assert_eq!(
        s.stats().pacer.underruns,
        1,
        "nothing queued after clear counts as an underrun"
    );
    // The bot speaks again after the clear.
    bot.outbound.push(&f).unwrap();
    s.handle_tick(ms(220));
    let (p, _) = drain(&mut s);
    assert!(p[0].len() > 2);
}

#[test]
fn late_driver_skips_instead_of_bursting() {
    let (mut s, _bot) = MediaSession::new(SessionConfig::default(), ms(0)).unwrap();
    s.handle_tick(ms(0));
    drain(&mut s);
    // 40 ms late: catch up tick by tick.
    assert!(s.handle_tick(ms(60)));
    assert!(s.handle_tick(ms(60)));
    assert!(s.handle_tick(ms(60)));
    assert!(!s.handle_tick(ms(60)));
    // A 1 s stall: the missed ticks are skipped, the timeline stays on absolute deadlines.
    assert!(s.handle_tick(ms(1065)));
    assert_eq!(s.poll_timeout(), ms(1080));
    assert!(s.stats().skipped_ticks >= 45);
}

#[test]
fn one_worker_spreads_many_sessions_over_the_period() {
    // A worker with 18 duplex calls: each gets its own phase; the worker's single timer always wakes for the
    // earliest deadline, and no two sessions share one.
    let n = 18;
    let mut sessions: Vec<MediaSession> = (0..n)
        .map(|i| {
            let cfg = SessionConfig {
                tick_phase: mediaproc_pipeline::spread_tick_phase(i, n),
                ..SessionConfig::default()
            };
            MediaSession::new(cfg, ms(1000)).unwrap().0
        })
        .collect();
    let mut wakeups = Vec::new();
    for _ in 0..(3 * n) {
        let (i, due) = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.poll_timeout()))
            .min_by_key(|x| x.1)
            .unwrap();
        wakeups.push(due);
        assert!(sessions[i].handle_tick(due));
        while sessions[i].poll_output().is_some() {}
    }
    // Deadlines strictly increase by 20 ms / 18 ≈ 1.11 ms: the work is spread, not batched.
    for w in wakeups.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_micros(1100) && gap <= Duration::from_micros(1120),
            "{gap:?}"
        );
    }
    assert_eq!(mediaproc_pipeline::spread_tick_phase(3, 0), Duration::ZERO);
}

#[test]
fn tick_phase_spreads_sessions() {
    let a = MediaSession::new(SessionConfig::default(), ms(0))
        .unwrap()
        .0;
    let b = MediaSession::new(
        SessionConfig {
            tick_phase: ms(13),
            ..SessionConfig::default()
        },
        ms(0),
    )
    .unwrap()
    .0;
    assert_eq!((a.poll_timeout(), b.poll_timeout()), (ms(0), ms(13)));
    assert!(
        MediaSession::new(
            SessionConfig {
                tick_phase: ms(20),
                ..SessionConfig::default()
            },
            ms(0)
        )
        .is_err()
    );
}

struct Talker {
    enc: OpusEncoder,
    rate: SampleRate,
    n: usize,
    freq: f32,
    buf: [u8; MAX_PAYLOAD],
}

impl Talker {
    fn new(rate: SampleRate, freq: f32) -> Self {
        Self {
            enc: OpusEncoder::new(rate, EncoderSettings::default()).unwrap(),
            rate,
            n: 0,
            freq,
            buf: [0; MAX_PAYLOAD],
        }
    }
    fn send(&mut self, s: &mut MediaSession, now: Duration, msi: u32, level: Option<u8>, amp: f32) {
        let pcm = tone(self.rate, self.n, self.freq, amp);
        let len = self.enc.encode(&pcm, &mut self.buf).unwrap();
        let rtp = RtpPacketInfo {
            ssrc: msi + 1000,
            sequence: self.n as u16,
            timestamp: (self.n as u32) * 960,
            marker: false,
            payload_type: 111,
            audio_level: level,
            source_id: Some(msi),
        };
        s.handle_packet(now, &rtp, &self.buf[..len]);
        self.n += 1;
    }
}

#[test]
fn dominant_speaker_hysteresis_active_speakers_and_unmixed() {
    let cfg = SessionConfig {
        max_unmixed: 2,
        max_streams: 3,
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, ms(0)).unwrap();
    let rate = SampleRate::HZ_16000;
    let mut t = [
        Talker::new(rate, 200.0),
        Talker::new(rate, 450.0),
        Talker::new(rate, 700.0),
    ];
    let mut changes = Vec::new();
    let mut out = ReceivedAudio::new(rate);
    let mut last = None;
    // RFC 6464 levels drive the tracker (0 = loud, 127 = silent). Phases: 1 talks 2 s; 2 coughs 100 ms; 2 talks 2 s.
    for tick in 0..300u64 {
        let now = ms(tick * 20);
        let (l1, l2) = match tick {
            0..100 => (20, 127),
            100..105 => (20, 5),
            105..200 => (20, 127),
            _ => (127, 20),
        };
        let amp = |l: u8| if l == 127 { 0.0 } else { 6000.0 };
        t[0].send(&mut s, now + ms(1), 1, Some(l1), amp(l1));
        t[1].send(&mut s, now + ms(1), 2, Some(l2), amp(l2));
        t[2].send(&mut s, now + ms(1), 3, Some(127), 0.0); // a muted participant
        s.handle_tick(now + ms(5));
        for o in std::iter::from_fn(|| s.poll_output().map(|o| format!("{o:?}"))) {
            if o.contains("DominantSpeakerChanged") {
                changes.push((tick, o));
            }
        }
        while bot.inbound.pop(&mut out) {
            last = Some(out.clone());
            if tick == 150 {
                assert_eq!(out.active_speakers(), &[1]);
                assert_eq!(out.unmixed_len(), 1);
                assert_eq!(out.unmixed(0).unwrap().0, 1);
            }
        }
    }
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes[0].1.contains("current: Some(1)"));
    assert!(changes[1].1.contains("previous: Some(1), current: Some(2)"));
    assert!(
        changes[1].0 >= 200 + 25 - 5,
        "switch only after the hold time: {changes:?}"
    );
    assert_eq!(s.dominant_speaker(), Some(2));
    let last = last.unwrap();
    assert_eq!(last.active_speakers(), &[2]);
    // Mixed = sum of the streams; the muted one adds nothing, the unmixed stream is speaker 2's audio.
    let (id, un) = last.unmixed(0).unwrap();
    assert_eq!(id, 2);
    let diff = un
        .iter()
        .zip(last.mixed())
        .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
        .max()
        .unwrap();
    assert!(
        diff < 100,
        "only speaker 2 is audible: max difference {diff}"
    );
    assert!(!last.info.is_silence);
}

#[test]
fn inbound_overflow_drops_oldest_when_bot_stalls() {
    let cfg = SessionConfig {
        inbound_capacity_frames: 10,
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, ms(0)).unwrap();
    let mut talker = Talker::new(SampleRate::HZ_16000, 300.0);
    for tick in 0..100u64 {
        talker.send(&mut s, ms(tick * 20 + 1), 9, None, 5000.0);
        s.handle_tick(ms(tick * 20 + 5));
        drain(&mut s);
    }
    let mut out = ReceivedAudio::new(SampleRate::HZ_16000);
    let delivered = s.stats().frames_to_bot;
    assert!(delivered >= 90, "{delivered}");
    // The bot stalled for 100 ticks: it resumes at once with the newest frames, not audio from 2 s ago, and every
    // older frame was dropped and counted.
    assert!(bot.inbound.pop(&mut out));
    assert!(
        out.info.sequence + 6 >= delivered,
        "first frame after stall is {} of {delivered}",
        out.info.sequence
    );
    assert_eq!(
        bot.inbound.dropped(),
        delivered - INBOUND_RESUME_FRAMES as u64
    );
    assert_eq!(s.stats().frames_dropped_for_bot, bot.inbound.dropped());
}

#[test]
fn non_opus_rate_goes_through_the_resampler() {
    // 44.1 kHz: decoded at 48 kHz then resampled; the bot's frames are resampled to 48 kHz before encoding.
    let rate = SampleRate::new(44_100).unwrap();
    let cfg = SessionConfig {
        rate,
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, ms(0)).unwrap();
    let mut talker = Talker::new(SampleRate::HZ_48000, 440.0);
    let mut out = ReceivedAudio::new(rate);
    let mut frames = 0;
    let mut loud = 0;
    let f = tone(rate, 0, 440.0, 6000.0);
    for tick in 0..100u64 {
        talker.send(&mut s, ms(tick * 20 + 1), 4, None, 6000.0);
        bot.outbound.push(&f).unwrap();
        s.handle_tick(ms(tick * 20 + 5));
        let (p, _) = drain(&mut s);
        assert_eq!(p.len(), 1);
        while bot.inbound.pop(&mut out) {
            assert_eq!(out.mixed().len(), 882);
            frames += 1;
            if mediaproc_pipeline::level_dbov(out.mixed()) > -25.0 {
                loud += 1;
            }
        }
    }
    assert!(frames >= 97 && loud >= 90, "{frames} {loud}");
    // The resampler's delay is part of the reported receive delay.
    let d = s.receive_delay(4).unwrap();
    assert!(d >= ms(20) && d < ms(80), "{d:?}");
}

proptest::proptest! {
    #[test]
    fn untrusted_packets_never_panic(pkts in proptest::collection::vec(
        (proptest::num::u16::ANY, proptest::num::u32::ANY, proptest::num::u8::ANY, proptest::option::of(0u32..6),
         proptest::option::of(proptest::num::u8::ANY), proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
        1..60)) {
        let (mut s, mut bot) = MediaSession::new(SessionConfig::default(), ms(0)).unwrap();
        let mut out = ReceivedAudio::new(SampleRate::HZ_16000);
        for (i, (seq, ts, pt, msi, level, payload)) in pkts.into_iter().enumerate() {
            let rtp = RtpPacketInfo {
                ssrc: 1, sequence: seq, timestamp: ts, marker: false,
                payload_type: if pt % 2 == 0 { 111 } else { pt }, audio_level: level, source_id: msi,
            };
            let now = ms(i as u64 * 7);
            s.handle_packet(now, &rtp, &payload);
            while s.handle_tick(now) {
                while s.poll_output().is_some() {}
            }
            while bot.inbound.pop(&mut out) {}
        }
    }
}

#[test]
fn stream_slots_are_reused_after_idle_sources() {
    let cfg = SessionConfig {
        max_streams: 1,
        ..SessionConfig::default()
    };
    let (mut s, _bot) = MediaSession::new(cfg, ms(0)).unwrap();
    let mut a = Talker::new(SampleRate::HZ_16000, 300.0);
    let mut b = Talker::new(SampleRate::HZ_16000, 500.0);
    let mut started = Vec::new();
    for tick in 0..300u64 {
        let now = ms(tick * 20);
        if tick < 100 {
            a.send(&mut s, now + ms(1), 1, None, 5000.0);
        }
        // B talks from the start but there is only one slot: ignored until A has been idle for 2 s.
        b.send(&mut s, now + ms(2), 2, None, 5000.0);
        s.handle_tick(now + ms(5));
        while let Some(o) = s.poll_output() {
            if let Output::Event(Event::StreamStarted { source_id }) = o {
                started.push((tick, source_id));
            }
        }
    }
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(started[0], (0, 1));
    assert_eq!(started[1].1, 2);
    assert!(
        started[1].0 >= 199,
        "reused only after 2 s idle: {started:?}"
    );
    assert!(s.stream_stats(1).is_none());
    let st = s.stream_stats(2).unwrap();
    assert!(
        st.received < 110 && st.late == 0,
        "fresh counters for the new source: {st:?}"
    );
    assert!(s.stats().packets_ignored >= 190);
}

#[test]
fn in_band_fec_follows_the_reported_loss() {
    let (mut s, _bot) = MediaSession::new(SessionConfig::default(), Duration::ZERO).unwrap();
    // Off by default: it costs quality on a clean path.
    let e = s.encoder_settings();
    assert_eq!((e.inband_fec, e.expected_loss_percent), (false, 0));
    assert_eq!(s.fec_mode(), mediaproc_pipeline::FecMode::Auto);
    // The far end reports 5 % loss (fraction lost 13/256): FEC on, tuned for it.
    s.set_remote_loss(13);
    s.set_remote_loss(13);
    let e = s.encoder_settings();
    assert!(
        e.inband_fec && (4..=6).contains(&e.expected_loss_percent),
        "{e:?}"
    );
    // A clean path again: off.
    for _ in 0..5 {
        s.set_remote_loss(0);
    }
    assert!(!s.encoder_settings().inband_fec);
    // Overrides at run time; a bad value changes nothing.
    s.set_encoder_overrides(mediaproc_pipeline::EncoderOverrides {
        bitrate_bps: Some(24_000),
        fec: Some(mediaproc_pipeline::FecMode::On),
        ..Default::default()
    })
    .unwrap();
    let e = s.encoder_settings();
    assert!(e.inband_fec && e.bitrate_bps == 24_000, "{e:?}");
    assert!(
        s.set_encoder_overrides(mediaproc_pipeline::EncoderOverrides {
            complexity: Some(11),
            ..Default::default()
        })
        .is_err()
    );
    assert_eq!(s.encoder_settings(), e);
    // The encoder keeps working after the changes.
    let mut out = Vec::new();
    for n in 0..5u64 {
        assert!(s.handle_tick(ms(n * 20)));
        while let Some(o) = s.poll_output() {
            if let Output::Transmit(t) = o {
                out.push(t.payload.len());
            }
        }
    }
    assert_eq!(out.len(), 5);
    // An edge's DTX default (a WebRTC peer): on, and a pause sends only its first packet (here the pause began
    // before: its first "no audio" packet went out with the ticks above).
    s.set_dtx_default(true);
    assert!(s.encoder_settings().dtx);
    let mut sent = 0;
    for n in 5..10u64 {
        assert!(s.handle_tick(ms(n * 20)));
        while let Some(o) = s.poll_output() {
            sent += u32::from(matches!(o, Output::Transmit(_)));
        }
    }
    assert_eq!(sent, 0, "the bot queued nothing");
    assert_eq!(s.stats().pacer.dtx_not_sent, 5);
    // The session's own choice wins over the edge's default.
    s.set_encoder_overrides(mediaproc_pipeline::EncoderOverrides {
        dtx: Some(false),
        ..Default::default()
    })
    .unwrap();
    s.set_dtx_default(true);
    assert!(!s.encoder_settings().dtx);
}
