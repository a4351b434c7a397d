//! G.711 sessions in simulated time: bot frames → 8 kHz → PCMU/PCMA packets → (network) → jitter buffer → playout
//! engine → 16 kHz frames for the bot; loss with concealment; payload-type and codec switching at run time.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{Rng, speech_like};
use mediaproc_pipeline::{
    Codec, DuplicateMode, G711Encoder, MediaSession, Output, ReceivedAudio, RtpPacketInfo,
    SampleRate, SessionConfig,
};

const RATE: SampleRate = SampleRate::HZ_16000;
const SPF: usize = 320;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn tone(samples: usize, hz: f64, amp: f64) -> Vec<i16> {
    (0..samples)
        .map(|i| ((i as f64 * std::f64::consts::TAU * hz / 16_000.0).sin() * amp) as i16)
        .collect()
}

fn corr_at(a: &[i16], b: &[i16], lag: usize) -> (f64, f64, f64) {
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (i, &x) in a.iter().enumerate() {
        let Some(&y) = b.get(i + lag) else { break };
        let (x, y) = (f64::from(x), f64::from(y));
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    (xy, xx, yy)
}

fn norm((xy, xx, yy): (f64, f64, f64)) -> f64 {
    xy / (xx * yy).sqrt().max(1.0)
}

/// Correlation of `got` with `src` after alignment: 250 ms blocks of the source (from `from` on), each at its own
/// best delay (the first searched over 0..250 ms, later ones within ±20 ms of the previous: the playout engine may
/// have moved the timeline by pitch periods), summed over blocks (loud blocks weigh more). Returns it and the first
/// block's delay in samples.
fn aligned_correlation(src: &[i16], got: &[i16], from: usize, to: usize) -> (f64, usize) {
    let block = 4000;
    let mut sum = (0.0, 0.0, 0.0);
    let mut lag = None::<usize>;
    let mut first = 0;
    let mut start = from;
    while start + block <= to {
        let a = &src[start..start + block];
        let b = &got[start..];
        let range = match lag {
            None => 0..4000,
            Some(l) => l.saturating_sub(320)..l + 320,
        };
        let best = range
            .map(|l| (norm(corr_at(a, b, l)), l))
            .fold((f64::MIN, 0), |x, y| if y.0 > x.0 { y } else { x });
        if lag.is_none() {
            first = best.1;
        }
        lag = Some(best.1);
        let c = corr_at(a, b, best.1);
        sum = (sum.0 + c.0, sum.1 + c.1, sum.2 + c.2);
        start += block;
    }
    (norm(sum), first)
}

/// A loopback call: the bot plays `src`, the session sends it as `codec` (payload type `pt`), the network delivers
/// the packets back to the same session after 30 ms + up to `jitter_ms` (dropping the packets `drop` picks), and what
/// the bot hears comes back. Returns the audio heard and the session.
fn loopback(
    codec: Codec,
    pt: u8,
    src: &[i16],
    jitter_ms: u64,
    mut drop: impl FnMut(u64) -> bool,
) -> (Vec<i16>, MediaSession) {
    let cfg = SessionConfig {
        codec,
        payload_type: pt,
        tick_phase: ms(3),
        // The session hears its own packets: its duplicates would fill the very losses these tests conceal.
        duplicate: DuplicateMode::Off,
        ..SessionConfig::default()
    };
    let (mut s, mut bot) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    let mut rng = Rng::new(7);
    let mut net: VecDeque<(Duration, RtpPacketInfo, Vec<u8>)> = VecDeque::new();
    let mut heard = Vec::new();
    let mut frame = ReceivedAudio::new(RATE);
    let frames = src.len() / SPF;
    let mut pushed = 0;
    let mut sent = 0u64;
    let mut t = 0u64;
    while heard.len() < src.len() + 16_000 {
        let now = ms(t);
        // Keep two frames queued for the pacer, then silence once the source has been played.
        while pushed < frames && pushed < (t / 20) as usize + 2 {
            bot.outbound
                .push(&src[pushed * SPF..(pushed + 1) * SPF])
                .unwrap();
            pushed += 1;
        }
        while net.front().is_some_and(|p| p.0 <= now) {
            let (at, rtp, payload) = net.pop_front().unwrap();
            s.handle_packet(at, &rtp, &payload);
        }
        while s.handle_tick(now) {
            while let Some(o) = s.poll_output() {
                if let Output::Transmit(p) = o {
                    assert_eq!(p.payload_type, pt);
                    if codec.is_g711() {
                        assert_eq!(p.payload.len(), 160, "160 bytes per 20 ms");
                    }
                    let rtp = RtpPacketInfo {
                        ssrc: p.ssrc,
                        sequence: p.sequence,
                        timestamp: p.timestamp,
                        marker: p.marker,
                        payload_type: p.payload_type,
                        audio_level: None,
                        source_id: Some(1),
                    };
                    if !drop(sent) {
                        let delay = 30
                            + if jitter_ms > 0 {
                                rng.next_u64() % jitter_ms
                            } else {
                                0
                            };
                        // In order (jitter without reordering keeps the test about G.711, not the jitter buffer).
                        let at = (now + ms(delay)).max(net.back().map_or(Duration::ZERO, |b| b.0));
                        net.push_back((at, rtp, p.payload.to_vec()));
                    }
                    sent += 1;
                }
            }
        }
        while bot.inbound.pop(&mut frame) {
            heard.extend_from_slice(frame.mixed());
        }
        t += 1;
    }
    (heard, s)
}

#[test]
fn pcmu_and_pcma_round_trip_tone_and_speech() {
    let secs = 6;
    let signals = [
        ("tone", tone(16_000 * secs, 440.0, 8000.0)),
        ("speech", speech_like(16_000, 16_000 * secs)),
    ];
    for (codec, pt) in [(Codec::Pcmu, 0), (Codec::Pcma, 8)] {
        for (name, src) in &signals {
            let (heard, s) = loopback(codec, pt, src, 10, |_| false);
            let (c, lag) = aligned_correlation(src, &heard, 16_000, src.len() - 8000);
            eprintln!("{codec:?} {name}: correlation {c:.4} at {lag} samples");
            assert!(c >= 0.95, "{codec:?} {name}: correlation {c:.4}");
            // The loop's delay (30..40 ms network, the jitter buffer, the two resamplers, less the two frames the bot
            // queues ahead); a tone's is ambiguous.
            if *name == "speech" {
                assert!((160..4000).contains(&lag), "{codec:?} {name}: delay {lag}");
            }
            let st = s.stream_stats(1).unwrap();
            assert_eq!((st.late, st.lost, st.fec_recovered), (0, 0, 0), "{st:?}");
            // The delay statistics run on the 8 kHz clock: 10 ms of jitter needs no more than 2 frames.
            assert!(st.target_delay_ms <= 40, "{codec:?} {name}: {st:?}");
            assert_eq!(s.stats().decode_errors, 0);
            assert_eq!(s.stream_codec(1), Some(codec));
            let p = s.stats().pacer;
            assert!(
                (p.encoded + p.encoder_skipped) as usize >= src.len() / SPF,
                "{p:?}"
            );
        }
    }
}

#[test]
fn loss_is_concealed() {
    let src = speech_like(16_000, 16_000 * 6);
    let t = tone(16_000 * 6, 300.0, 8000.0);
    for (name, src) in [("speech", &src), ("tone", &t)] {
        // 5 % of the packets lost (every 20th, from the start of the second second).
        let (heard, s) = loopback(Codec::Pcmu, 0, src, 0, |n| n >= 50 && n % 20 == 7);
        let st = s.stream_stats(1).unwrap();
        eprintln!("{name}: {st:?}");
        assert!(st.lost >= 12, "{st:?}");
        assert_eq!(st.fec_recovered, 0, "G.711 has no FEC: {st:?}");
        // Each loss is concealed (a loss found at its tick conceals the frame; one found as an underrun conceals the
        // shortfall, and the time-scaling makes up the rest) and merged back into the decoded audio.
        assert!(
            st.concealed_ms >= 10 * st.lost,
            "lost frames concealed: {st:?}"
        );
        assert!(st.merges >= st.lost / 2, "{st:?}");
        assert_eq!(s.stats().decode_errors, 0);
        let (c, _) = aligned_correlation(src, &heard, 16_000, src.len() - 8000);
        eprintln!("{name} with 5 % loss: correlation {c:.4}");
        // A lost 20 ms of speech cannot be recovered, but pitch repetition keeps most of the waveform.
        assert!(c >= 0.8, "{name}: correlation {c:.4}");
        // The concealment keeps the level up (no holes of silence): every 20 ms block of the tone is audible.
        if name == "tone" {
            let lag = aligned_correlation(src, &heard, 16_000, 20_000).1;
            let quiet = heard[lag + 16_000..lag + src.len() - 8000]
                .chunks(SPF)
                .filter(|b| b.iter().map(|&x| i32::from(x).abs()).max().unwrap_or(0) < 2000)
                .count();
            assert_eq!(quiet, 0, "tone blocks without audio");
        }
    }
}

/// A remote G.711 sender (its own packets, not the session's).
struct Sender {
    enc: G711Encoder,
    seq: u16,
    ts: u32,
    pos: usize,
}

impl Sender {
    fn packet(&mut self, src: &[i16], pt: u8) -> (RtpPacketInfo, Vec<u8>) {
        let mut buf = vec![0u8; 160];
        let f = &src[self.pos % (src.len() - SPF)..][..SPF];
        self.enc.encode(Some(f), &mut buf).unwrap();
        let rtp = RtpPacketInfo {
            ssrc: 0x5150,
            sequence: self.seq,
            timestamp: self.ts,
            marker: false,
            payload_type: pt,
            audio_level: None,
            source_id: None,
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.pos += SPF;
        (rtp, buf)
    }
}

#[test]
fn payload_types_and_codecs_switch_at_run_time() {
    // An Opus session (payload type 111) whose edge later declares PCMU on 0 and PCMA on 8.
    let (mut s, mut bot) = MediaSession::new(SessionConfig::default(), Duration::ZERO).unwrap();
    assert_eq!(s.receive_codecs().get(111), Some(Codec::Opus));
    assert_eq!(s.receive_codecs().get(0), None);
    let src = tone(16_000 * 8, 440.0, 8000.0);
    let mut tx = Sender {
        enc: G711Encoder::new(Codec::Pcmu, RATE).unwrap(),
        seq: 65_000,
        ts: u32::MAX - 1000,
        pos: 0,
    };
    let mut heard: Vec<(u64, Vec<i16>)> = Vec::new();
    let mut frame = ReceivedAudio::new(RATE);
    let mut sent_ts = Vec::new();
    let mut cn_at_switch = (0, 0);
    for tick in 0..400u64 {
        let now = ms(tick * 20);
        match tick {
            100 => s.set_receive_payload_type(0, Codec::Pcmu).unwrap(),
            200 => {
                // The sender switches to PCMA (same SSRC, same clock) and we start sending PCMA ourselves.
                s.set_receive_payload_type(8, Codec::Pcma).unwrap();
                tx.enc.set_codec(Codec::Pcma).unwrap();
                s.set_send_codec(Codec::Pcma, 8).unwrap();
            }
            300 => s.set_send_codec(Codec::Opus, 111).unwrap(),
            _ => {}
        }
        let pt = if tick < 200 { 0 } else { 8 };
        let (rtp, payload) = tx.packet(&src, pt);
        s.handle_packet(now + ms(5), &rtp, &payload);
        bot.outbound.push(&src[..SPF]).unwrap();
        assert!(s.handle_tick(now + ms(10)));
        while let Some(o) = s.poll_output() {
            if let Output::Transmit(p) = o {
                sent_ts.push((tick, p.payload_type, p.timestamp, p.payload.len()));
            }
        }
        while bot.inbound.pop(&mut frame) {
            heard.push((tick, frame.mixed().to_vec()));
        }
        let cn = || s.stream_stats(0x5150).map_or(0, |st| st.comfort_noise_ms);
        match tick {
            199 => cn_at_switch.0 = cn(),
            210 => cn_at_switch.1 = cn(),
            _ => {}
        }
    }
    let st = s.stats();
    assert_eq!(
        st.unknown_payload_type, 100,
        "PCMU before it was declared: {st:?}"
    );
    assert_eq!(st.packets_ignored, 100);
    assert_eq!(s.stream_codec(0x5150), Some(Codec::Pcma));
    // Audio for the bot while PCMU is declared and after the switch to PCMA (a couple of ticks to re-buffer).
    let audible = |from: u64, to: u64| {
        heard
            .iter()
            .filter(|(t, f)| {
                (from..to).contains(t)
                    && f.iter().map(|&x| i32::from(x).abs()).max().unwrap() > 4000
            })
            .count() as u64
    };
    assert_eq!(audible(0, 100), 0, "nothing before PCMU was declared");
    assert!(audible(100, 200) >= 95, "PCMU: {}", audible(100, 200));
    assert!(audible(200, 300) >= 95, "PCMA: {}", audible(200, 300));
    // The stream goes on through the switch (comfort noise while it re-buffers on the new codec).
    assert!(cn_at_switch.1 > cn_at_switch.0, "{cn_at_switch:?}");
    // The 440 Hz tone comes through the PCMA stretch intact (≥ 0.95 against an ideal tone at its best phase).
    let pcma: Vec<i16> = heard
        .iter()
        .filter(|(t, _)| (220..300).contains(t))
        .flat_map(|(_, f)| f.iter().copied())
        .collect();
    let (c, _) = aligned_correlation(&tone(pcma.len(), 440.0, 8000.0), &pcma, 0, 8000);
    assert!(c >= 0.95, "PCMA after the switch: {c:.4}");
    // Send side: Opus (+960) until tick 200, PCMA (+160, 160 bytes, PT 8) until 300, Opus again after.
    for w in sent_ts.windows(2) {
        let ((_, _, ts0, _), (t1, pt1, ts1, len1)) = (w[0], w[1]);
        let step = ts1.wrapping_sub(ts0);
        match t1 {
            1..=199 => assert_eq!((pt1, step), (111, 960)),
            201..=299 => assert_eq!((pt1, step, len1), (8, 160, 160)),
            301.. => assert_eq!((pt1, step), (111, 960)),
            _ => {}
        }
    }
    // Unknown payload types stay ignored; out-of-range ones are rejected.
    assert!(s.set_receive_payload_type(128, Codec::Pcmu).is_err());
    assert!(s.set_send_codec(Codec::Pcmu, 200).is_err());
    s.remove_receive_payload_type(8);
    let (rtp, payload) = tx.packet(&src, 8);
    s.handle_packet(ms(8000), &rtp, &payload);
    assert_eq!(s.stats().unknown_payload_type, 101);
    // A configured receive table.
    let cfg = SessionConfig {
        codec: Codec::Pcma,
        payload_type: 8,
        receive_codecs: mediaproc_pipeline::ReceiveCodecs::new().with(0, Codec::Pcmu),
        ..SessionConfig::default()
    };
    let (s2, _) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    let accepted: Vec<_> = s2.receive_codecs().iter().collect();
    assert_eq!(accepted, vec![(0, Codec::Pcmu), (8, Codec::Pcma)]);
    assert_eq!(s2.send_codec(), (Codec::Pcma, 8));
}
