//! Shared test helpers: a seeded PRNG, a speech-like signal, a network simulator and a driver.
#![allow(dead_code, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use mediaproc_pipeline::{
    EncoderSettings, JitterConfig, JitterStats, MAX_PAYLOAD, MediaSession, OpusEncoder, Output,
    ReceivedAudio, RtpPacketInfo, SampleRate, SessionConfig,
};

/// SplitMix64: small, seeded, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Speech-like test signal: a harmonic series (1/k amplitudes up to 3.8 kHz) on a pitch that glides between
/// about 90 and 230 Hz, shaped by a syllable envelope (≈ 4 syllables/s with short gaps and a longer pause every
/// 3 s) and a slowly varying loudness. Deterministic.
pub fn speech_like(rate: u32, samples: usize) -> Vec<i16> {
    let fs = f64::from(rate);
    let mut phases = [0.0f64; 48];
    let mut out = Vec::with_capacity(samples);
    for n in 0..samples {
        let t = n as f64 / fs;
        let f0 = 150.0
            + 50.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin()
            + 25.0 * (2.0 * std::f64::consts::PI * 0.13 * t).sin();
        // Syllables: 250 ms, on for the first 190 ms with raised-cosine edges.
        let ts = t % 0.25;
        let syl = if ts < 0.19 {
            (std::f64::consts::PI * ts / 0.19).sin().powf(0.6)
        } else {
            0.0
        };
        let pause = if t % 3.0 > 2.6 { 0.0 } else { 1.0 };
        let loud = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 0.23 * t).sin();
        let env = syl * pause * loud;
        let mut v = 0.0;
        for (k, ph) in phases.iter_mut().enumerate() {
            let fk = f0 * (k + 1) as f64;
            *ph = (*ph + 2.0 * std::f64::consts::PI * fk / fs) % (2.0 * std::f64::consts::PI);
            if fk < 3800.0 {
                v += ph.sin() / (k + 1) as f64;
            }
        }
        out.push((v * env * 6000.0).clamp(-32000.0, 32000.0) as i16);
    }
    out
}

/// Loss model.
#[derive(Debug, Clone, Copy)]
pub enum Loss {
    None,
    /// Independent loss with this probability.
    Random(f64),
    /// Gilbert–Elliott: (p good→bad, p bad→good, loss probability in bad state).
    Bursty(f64, f64, f64),
}

/// Network conditions.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub loss: Loss,
    /// Fixed one-way delay.
    pub base_delay_ms: f64,
    /// Uniform extra delay 0..jitter_ms.
    pub jitter_ms: f64,
    /// Probability that a packet is held back an extra 30–60 ms (reordering).
    pub reorder: f64,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Sender clock error in ppm (positive: the sender's 20 ms are shorter than ours).
    pub drift_ppm: f64,
    /// RFC 7587 DTX: ≤ 2-byte packets are only sent every 20th frame; sequence numbers count sent packets.
    pub dtx: bool,
    /// The sender sends packets in pairs every 40 ms (as ffmpeg does): each even packet waits for the next one.
    pub pairs: bool,
    /// The sender reads its input in chunks of this many ms and sends each chunk's packets at once when it has read
    /// it (ffmpeg `-re` on a 16 kHz WAV: 4096 samples, 128 ms, a burst of 6–7 packets); 0 = off.
    pub chunk_ms: f64,
    /// Recorded transit times (ms, one per packet in send order, looped; NaN = lost): replaces the jitter model (e.g.
    /// a quality harness run's `arrivals.csv`).
    pub transit_trace: Option<&'static [f64]>,
    /// The receiving host stalls (its threads descheduled by a loaded CPU): see [`Stall`].
    pub stall: Stall,
}

/// Periodic stalls of the receiving host: from `first_ms` on, every `every_ms` for `len_ms`. A stalled network
/// thread (`net`) reads the packets that arrive meanwhile only at the stall's end and stamps them then; a stalled
/// worker (`worker`) hands over packets and runs the ticks due meanwhile only at the stall's end, in a bunch (the
/// packets first, as the daemon's worker drains its rings before it ticks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stall {
    pub first_ms: f64,
    pub every_ms: f64,
    pub len_ms: f64,
    pub net: bool,
    pub worker: bool,
}

impl Stall {
    /// When something due at `t` (ns) happens: the stall's end if `t` falls in one, else `t`.
    pub fn delay(&self, t: u128) -> u128 {
        if self.len_ms <= 0.0 || self.every_ms <= 0.0 {
            return t;
        }
        let ms = t as f64 / 1e6 - self.first_ms;
        if ms < 0.0 {
            return t;
        }
        let k = (ms / self.every_ms).floor();
        let start = self.first_ms + k * self.every_ms;
        let end = start + self.len_ms;
        if (t as f64 / 1e6) < end {
            (end * 1e6).ceil() as u128
        } else {
            t
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            loss: Loss::None,
            base_delay_ms: 40.0,
            jitter_ms: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            drift_ppm: 0.0,
            dtx: false,
            pairs: false,
            chunk_ms: 0.0,
            transit_trace: None,
            stall: Stall::default(),
        }
    }
}

/// Pre-encoded packets of a looping source signal (encoding once keeps the simulation fast).
pub struct Source {
    /// The original signal.
    pub pcm: Vec<i16>,
    /// The packets.
    pub packets: Vec<Vec<u8>>,
    /// The packets decoded over a perfect network (the best any receiver can do).
    pub decoded: Vec<i16>,
    pub rate: SampleRate,
}

impl Source {
    pub fn new(rate: SampleRate, seconds: usize, settings: EncoderSettings) -> Self {
        Self::with_noise(rate, seconds, settings, 0.0)
    }

    /// Like `new`, with white noise of `noise_rms` (in sample units) added everywhere, so no frame is quiet.
    pub fn with_noise(
        rate: SampleRate,
        seconds: usize,
        settings: EncoderSettings,
        noise_rms: f64,
    ) -> Self {
        let mut rng = Rng::new(99);
        let pcm: Vec<i16> = speech_like(rate.hz(), seconds * rate.hz() as usize)
            .into_iter()
            .map(|s| {
                (f64::from(s) + (rng.f64() - 0.5) * noise_rms * 12f64.sqrt())
                    .clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        Self::from_pcm(rate, pcm, settings)
    }

    /// Packets of `pcm` encoded with `settings` (a recorded signal, e.g. the quality harness's speech).
    pub fn from_pcm(rate: SampleRate, pcm: Vec<i16>, settings: EncoderSettings) -> Self {
        let spf = rate.samples_per_frame();
        let mut enc = OpusEncoder::new(rate, settings).unwrap();
        let mut buf = [0u8; MAX_PAYLOAD];
        let packets = pcm
            .chunks(spf)
            .map(|c| {
                let n = enc.encode(c, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect::<Vec<Vec<u8>>>();
        let mut dec = mediaproc_pipeline::OpusDecoder::new(rate).unwrap();
        let mut decoded = vec![0i16; pcm.len()];
        for (p, out) in packets.iter().zip(decoded.chunks_mut(spf)) {
            dec.decode(p, out).unwrap();
        }
        Self {
            pcm,
            packets,
            decoded,
            rate,
        }
    }
}

/// Sample `i` of `signal` looped endlessly.
pub fn looped(signal: &[i16], i: i64) -> f64 {
    f64::from(signal[i.rem_euclid(signal.len() as i64) as usize])
}

/// Per-tick observations.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// Mixed audio delivered to the bot.
    pub audio: Vec<i16>,
    /// (tick, current delay ms, target delay ms)
    pub delays: Vec<(u64, u32, u32)>,
    /// Ticks at which the bot got a frame (first one included).
    pub frames: u64,
    /// Sequence gaps seen by the bot.
    pub seq_gaps: u64,
    /// Ticks after delivery started where the bot got no frame.
    pub missing: u64,
    /// Time the first frame reached the bot.
    pub first_frame_at: Option<Duration>,
    /// The stream's statistics after each tick (with `keep_audio`), aligned with `audio`'s frames once delivery
    /// started: the time-scale operations of a tick are the differences of consecutive entries.
    pub stats: Vec<JitterStats>,
}

/// Runs `source` from one sender through the network into a `MediaSession` for `duration`.
pub fn run(
    source: &Source,
    net: NetConfig,
    seed: u64,
    duration: Duration,
    keep_audio: bool,
) -> (MediaSession, Trace) {
    run_with(
        source,
        net,
        seed,
        duration,
        keep_audio,
        JitterConfig::default(),
    )
}

/// [`run`] with the session's streams on `jitter`.
pub fn run_with(
    source: &Source,
    net: NetConfig,
    seed: u64,
    duration: Duration,
    keep_audio: bool,
    jitter: JitterConfig,
) -> (MediaSession, Trace) {
    let cfg = SessionConfig {
        tick_phase: Duration::from_millis(7),
        jitter,
        ..SessionConfig::default()
    };
    let (mut session, mut bot) = MediaSession::new(cfg, Duration::ZERO).unwrap();
    let mut rng = Rng::new(seed);
    // (hand-over to the session, tie-break, frame index, RTP sequence, arrival stamp)
    type InFlight = (u128, u64, usize, u16, u128);
    let mut heap: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut rtp_seq: u16 = 40_000;
    let mut order = 0u64;
    let mut sent = 0usize;
    let sender_start = Duration::from_millis(3);
    let period_ns = 20e6 / (1.0 + net.drift_ppm * 1e-6);
    let mut bad = false;
    let mut out = ReceivedAudio::new(source.rate);
    let mut trace = Trace::default();
    let mut last_seq: Option<u64> = None;
    let mut last_ts: u64 = 0;
    let mut started = false;
    let end = duration.as_nanos();
    loop {
        let next_send = sender_start.as_nanos() + (sent as f64 * period_ns) as u128;
        let next_arrival = heap.peek().map(|Reverse((t, ..))| *t).unwrap_or(u128::MAX);
        let next_tick = session.poll_timeout().as_nanos();
        let next_tick = if net.stall.worker {
            net.stall.delay(next_tick)
        } else {
            next_tick
        };
        let now = next_send.min(next_arrival).min(next_tick);
        if now > end {
            break;
        }
        let now_d = Duration::from_nanos(now as u64);
        if now == next_send {
            let tiny = source.packets[sent % source.packets.len()].len() <= 2;
            if net.dtx && tiny && sent % 20 != 0 {
                sent += 1;
                continue;
            }
            let seq = rtp_seq;
            rtp_seq = rtp_seq.wrapping_add(1);
            let lost = match net.loss {
                Loss::None => false,
                Loss::Random(p) => rng.f64() < p,
                Loss::Bursty(g2b, b2g, pl) => {
                    bad = if bad {
                        rng.f64() >= b2g
                    } else {
                        rng.f64() < g2b
                    };
                    bad && rng.f64() < pl
                }
            };
            let copies = if rng.f64() < net.duplicate { 2 } else { 1 };
            if !lost {
                for _ in 0..copies {
                    let mut d = net.base_delay_ms + rng.f64() * net.jitter_ms;
                    if let Some(t) = net.transit_trace {
                        // NaN: the recorded packet never arrived (lost).
                        d = net.base_delay_ms + t[sent % t.len()];
                        if d.is_nan() {
                            continue;
                        }
                    }
                    if net.pairs && sent % 2 == 0 {
                        // Held until its partner is sent one period later.
                        d += period_ns / 1e6;
                    }
                    if net.chunk_ms > 0.0 {
                        // Sent when the chunk holding the frame's end has been read.
                        let t = sent as f64 * period_ns / 1e6;
                        let read = ((t + 20.0) / net.chunk_ms).ceil() * net.chunk_ms;
                        d += read - t;
                    }
                    if rng.f64() < net.reorder {
                        d += 30.0 + rng.f64() * 30.0;
                    }
                    order += 1;
                    let arrival = now + (d * 1e6) as u128;
                    let stamp = if net.stall.net {
                        net.stall.delay(arrival)
                    } else {
                        arrival
                    };
                    let handed = if net.stall.worker {
                        net.stall.delay(stamp)
                    } else {
                        stamp
                    };
                    heap.push(Reverse((handed, order, sent, seq, stamp)));
                }
            }
            sent += 1;
        } else if now == next_arrival {
            let Reverse((_, _, n, seq, stamp)) = heap.pop().unwrap();
            let payload = &source.packets[n % source.packets.len()];
            let rtp = RtpPacketInfo {
                ssrc: 0xabcd,
                sequence: seq,
                timestamp: (n as u32).wrapping_mul(960).wrapping_add(4_000_000_000),
                marker: n == 0,
                payload_type: 111,
                audio_level: None,
                source_id: Some(7),
            };
            session.handle_packet(Duration::from_nanos(stamp as u64), &rtp, payload);
        } else {
            session.handle_tick(now_d);
            while let Some(o) = session.poll_output() {
                if let Output::Transmit(p) = o {
                    assert!(!p.payload.is_empty());
                }
            }
            let mut got = 0;
            while bot.inbound.pop(&mut out) {
                got += 1;
                if let Some(prev) = last_seq
                    && out.info.sequence != prev + 1
                {
                    trace.seq_gaps += 1;
                }
                // Frames the session did not deliver (ticks it skipped after a stall) are silence on the bot's
                // time axis, so the audio keeps its real-time alignment.
                let gap = last_seq.map_or(0, |_| {
                    (out.info.timestamp.saturating_sub(last_ts) / 200_000).saturating_sub(1)
                });
                if keep_audio {
                    trace
                        .audio
                        .extend(std::iter::repeat_n(0, gap as usize * out.mixed().len()));
                }
                last_ts = out.info.timestamp;
                last_seq = Some(out.info.sequence);
                if keep_audio {
                    trace.audio.extend_from_slice(out.mixed());
                }
                if trace.first_frame_at.is_none() {
                    trace.first_frame_at = Some(now_d);
                }
            }
            if got > 0 {
                started = true;
            } else if started {
                trace.missing += 1;
            }
            trace.frames += got;
            if let Some(s) = session.stream_stats(7) {
                if keep_audio && got > 0 {
                    trace.stats.push(s);
                }
                trace
                    .delays
                    .push((trace.frames, s.current_delay_ms, s.target_delay_ms));
            }
        }
    }
    (session, trace)
}

/// Quality of `audio` against a looped `reference`: for 100 ms windows every `step` samples, the best normalised
/// correlation over lags of whole frames (the jitter buffer moves audio in whole frames) from -60 to +8 frames, each
/// refined by ±`fine` samples (0 when the reference is the clean decode, which is frame-aligned; the codec delay
/// when comparing with the original). Windows where the reference is quiet are skipped.
pub fn window_correlations(
    reference: &[i16],
    spf: usize,
    audio: &[i16],
    step: usize,
    fine: i64,
) -> Vec<(f64, i64, usize)> {
    let spf = spf as i64;
    let win = 5 * spf as usize;
    let mut res = Vec::new();
    let mut i = 10 * spf as usize;
    while i + win < audio.len() {
        let out = &audio[i..i + win];
        let corr_at = |lag: i64| window_corr(reference, out, i, lag);
        let mut best = (f64::MIN, 0i64, 0.0);
        for kf in -60..=8 {
            let step = if fine > 0 { 4 } else { 1 };
            for q in 0..step {
                let lag = kf * spf + q * spf / step;
                let (c, e) = corr_at(lag);
                if c > best.0 {
                    best = (c, lag, e);
                }
            }
        }
        let centre = best.1;
        for d in -fine..=fine {
            let (c, e) = corr_at(centre + d);
            if c > best.0 {
                best = (c, centre + d, e);
            }
        }
        if best.2 / win as f64 > 300.0f64.powi(2) {
            res.push((best.0, best.1, i));
        }
        i += step;
    }
    res
}

/// Normalised correlation of the window `out` (starting at `i` of the output) with the looped `reference` at
/// `reference[i + lag..]`, and the reference's energy there (windows where the reference is quiet are skipped).
fn window_corr(reference: &[i16], out: &[i16], i: usize, lag: i64) -> (f64, f64) {
    let (mut xy, mut yy, mut xx) = (0.0, 0.0, 0.0);
    for (k, &o) in out.iter().enumerate() {
        let s = looped(reference, i as i64 + k as i64 + lag);
        let o = f64::from(o);
        xy += s * o;
        yy += o * o;
        xx += s * s;
    }
    let c = if xx <= 0.0 || yy <= 0.0 {
        0.0
    } else {
        xy / (xx * yy).sqrt()
    };
    (c, xx)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p) as usize]
}

/// Normalised correlation of `a[i..i + win]` (looped) with `b[i + lag..]` (looped).
pub fn corr_fixed(a: &[i16], b: &[i16], i: i64, win: usize, lag: i64) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for k in 0..win as i64 {
        let x = looped(a, i + k);
        let y = looped(b, i + k + lag);
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx <= 0.0 || yy <= 0.0 {
        0.0
    } else {
        xy / (xx * yy).sqrt()
    }
}

/// A sustained vowel (8 harmonics on a pitch gliding 110–220 Hz, loudness between 10 % and 100 %): speech-like but
/// never quiet, the same signal the daemon's end-to-end echo tests use.
pub fn vowel(samples: usize, rate: u32) -> Vec<i16> {
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

/// Encodes `pcm` as 20 ms Opus payloads at `rate` with the default settings.
pub fn opus_payloads(pcm: &[i16], rate: SampleRate) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(rate, EncoderSettings::default()).unwrap();
    let mut buf = [0u8; MAX_PAYLOAD];
    pcm.chunks_exact(rate.samples_per_frame())
        .map(|c| {
            let n = enc.encode(c, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

/// Decodes (sequence, payload) pairs in sequence order, concealing gaps, as a far-end receiver would (the classic
/// decoder of libopus ≤ 1.4, which a third-party peer has: no OSCE post-filter to blur what the session did).
pub fn decode_in_order(packets: &[(u16, Vec<u8>)], rate: SampleRate) -> Vec<i16> {
    let mut dec = mediaproc_pipeline::OpusDecoder::with_complexity(
        rate,
        mediaproc_pipeline::CLASSIC_DECODER_COMPLEXITY,
    )
    .unwrap();
    let Some(first) = packets.first().map(|p| p.0) else {
        return Vec::new();
    };
    let mut sorted = packets.to_vec();
    sorted.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
    let mut frame = vec![0i16; rate.samples_per_frame()];
    let mut out = Vec::new();
    let mut expected = first;
    for (seq, payload) in &sorted {
        while expected != *seq {
            dec.conceal(&mut frame).unwrap();
            out.extend_from_slice(&frame);
            expected = expected.wrapping_add(1);
        }
        dec.decode(payload, &mut frame).unwrap();
        out.extend_from_slice(&frame);
        expected = seq.wrapping_add(1);
    }
    out
}

/// The lag (in samples, `received` later than `sent`, 0..max_lag) of the peak normalised cross-correlation over the
/// whole overlap, and that correlation.
pub fn best_lag(sent: &[i16], received: &[i16], max_lag: usize) -> (usize, f64) {
    let corr = |lag: usize| -> f64 {
        let n = sent.len().min(received.len().saturating_sub(lag));
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in sent[..n].iter().zip(&received[lag..lag + n]) {
            let (x, y) = (f64::from(x), f64::from(y));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx > 0.0 && yy > 0.0 {
            xy / (xx * yy).sqrt()
        } else {
            0.0
        }
    };
    let max_lag = max_lag.min(received.len().saturating_sub(1600));
    let mut best = (0, f64::MIN);
    for lag in (0..max_lag).step_by(4) {
        let c = corr(lag);
        if c > best.1 {
            best = (lag, c);
        }
    }
    for lag in best.0.saturating_sub(3)..=(best.0 + 3).min(max_lag) {
        let c = corr(lag);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// Time-warp-aware quality of `audio` against a looped `reference`, for 100 ms windows every `step` samples: each
/// window's lag is searched to the sample (time-scale modification moves audio by pitch periods, not whole frames),
/// within ±1.5 frames of the previous window's lag (the playout changes the lag gradually), falling back to a search
/// over the whole range (-60..+8 frames) when the tracked lag stops fitting. Windows where the reference is quiet
/// are skipped. Returns (correlation, lag, window start): `audio[i] ≈ reference[i + lag]`.
pub fn tracked_correlations(
    reference: &[i16],
    spf: usize,
    audio: &[i16],
    step: usize,
) -> Vec<(f64, i64, usize)> {
    let spfi = spf as i64;
    let win = 5 * spf;
    let mut res = Vec::new();
    let mut i = 10 * spf;
    let mut prev: Option<i64> = None;
    while i + win < audio.len() {
        let out = &audio[i..i + win];
        let corr_at = |lag: i64| window_corr(reference, out, i, lag);
        let search = |from: i64, to: i64, by: i64| {
            let mut best = (f64::MIN, 0i64, 0.0);
            let mut lag = from;
            while lag <= to {
                let (c, e) = corr_at(lag);
                if c > best.0 {
                    best = (c, lag, e);
                }
                lag += by;
            }
            let centre = best.1;
            for lag in centre - by..=centre + by {
                let (c, e) = corr_at(lag);
                if c > best.0 {
                    best = (c, lag, e);
                }
            }
            best
        };
        let mut best = match prev {
            Some(p) => search(p - 3 * spfi / 2, p + 3 * spfi / 2, 2),
            None => (f64::MIN, 0, 0.0),
        };
        if best.0 < 0.6 {
            let global = search(-60 * spfi, 8 * spfi, 3);
            if global.0 > best.0 {
                best = global;
            }
        }
        if best.2 / win as f64 > 300.0f64.powi(2) {
            res.push((best.0, best.1, i));
            if best.0 >= 0.6 {
                prev = Some(best.1);
            }
        }
        i += step;
    }
    res
}

/// What a playout run looks like against its reference (see [`playout_report`]).
#[derive(Debug, Clone, Default)]
pub struct PlayoutReport {
    /// Voiced 40 ms windows (every 20 ms) compared.
    pub windows: usize,
    /// Mean and 10th percentile of their best correlation (lag searched to the sample).
    pub mean: f64,
    pub p10: f64,
    /// The largest change of the lag between consecutive voiced windows, in ms (a whole dropped or repeated frame is
    /// 20 ms; a pitch period 2.5–15 ms).
    pub max_lag_step_ms: f64,
    /// Output frames that are (near) digital silence while the reference speaks.
    pub silent_while_speaking: usize,
}

/// Tracks the lag of `audio` behind the looped `reference` window by window (40 ms windows every 20 ms) and reports
/// correlation, lag steps while the reference is voiced, and silent output frames while the reference speaks. Each
/// lag is searched to the sample within ±300 samples of the last one over a 100 ms span (long enough that a lag one
/// pitch period off does not fit as well), falling back to the whole range (-60..+8 frames) when the tracked lag
/// stops fitting. `skip` samples at the start (the jitter buffer's start-up) are ignored.
pub fn playout_report(reference: &[i16], spf: usize, audio: &[i16], skip: usize) -> PlayoutReport {
    let win = 2 * spf;
    let span = 5 * spf;
    let rate_ms = spf as f64 / 20.0;
    let energy = |i: i64, n: usize| -> f64 {
        (0..n as i64)
            .map(|k| looped(reference, i + k).powi(2))
            .sum::<f64>()
            / n as f64
    };
    // Correlation of audio[i..i + n] with the reference at `lag`, over every `stride`-th sample.
    let corr = |i: usize, n: usize, lag: i64, stride: usize| -> f64 {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for k in (0..n).step_by(stride) {
            let o = f64::from(audio[i + k]);
            let r = looped(reference, (i + k) as i64 + lag);
            xy += o * r;
            xx += r * r;
            yy += o * o;
        }
        if xx <= 0.0 || yy <= 0.0 {
            0.0
        } else {
            xy / (xx * yy).sqrt()
        }
    };
    let search = |i: usize, n: usize, from: i64, to: i64, by: i64, stride: usize| -> (f64, i64) {
        let mut best = (f64::MIN, from);
        let mut lag = from;
        while lag <= to {
            let c = corr(i, n, lag, stride);
            if c > best.0 {
                best = (c, lag);
            }
            lag += by;
        }
        let centre = best.1;
        best.0 = f64::MIN;
        for lag in centre - by..=centre + by {
            let c = corr(i, n, lag, 1);
            if c > best.0 {
                best = (c, lag);
            }
        }
        best
    };
    let mut rep = PlayoutReport::default();
    let mut cs = Vec::new();
    let mut prev: Option<(i64, usize)> = None;
    let mut i = skip;
    let spfi = spf as i64;
    while i + span < audio.len() {
        // The lag: over the 100 ms span centred on the window.
        let at = i.saturating_sub((span - win) / 2);
        let mut best = match prev {
            Some((p, _)) => search(at, span, p - 300, p + 300, 1, 4),
            None => (f64::MIN, 0),
        };
        if best.0 < 0.5 {
            // Lost the lock (a gap, or the start): search everything.
            let g = search(at, span, -60 * spfi, 8 * spfi, 2, 8);
            if g.0 > best.0 {
                best = g;
            }
        }
        let lag = best.1;
        let c = corr(i, win, lag, 1);
        let voiced = energy(i as i64 + lag, win) > 600.0f64.powi(2);
        // Silence check per frame: the reference frame at this lag speaks clearly, the output is near silence.
        let out_e = audio[i..i + spf]
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>()
            / spf as f64;
        if best.0 > 0.8
            && energy(i as i64 + lag, spf) > 1000.0f64.powi(2)
            && out_e < 30.0f64.powi(2)
        {
            rep.silent_while_speaking += 1;
        }
        if voiced {
            cs.push(c);
            if best.0 > 0.8 {
                if let Some((p, at)) = prev
                    && at + spf == i
                {
                    rep.max_lag_step_ms = rep.max_lag_step_ms.max((lag - p).abs() as f64 / rate_ms);
                }
                prev = Some((lag, i));
            }
        }
        i += spf;
    }
    rep.windows = cs.len();
    rep.mean = mean(&cs);
    rep.p10 = if cs.is_empty() {
        0.0
    } else {
        percentile(&cs, 0.1)
    };
    rep
}

/// Time-scale operations (accelerate or preemptive expand, from the per-tick statistics) of a run, split by whether
/// the frame played at that tick is speech (RMS above 600, the voiced threshold of [`playout_report`]) or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeScaleOps {
    /// Ticks with an accelerate or preemptive expand while speech plays.
    pub in_speech: usize,
    /// The ms they removed or added.
    pub in_speech_ms: u64,
    /// Ticks with an operation in quiet audio.
    pub in_quiet: usize,
    /// Speech ticks counted.
    pub speech_ticks: usize,
}

/// Counts the time-scale operations of `trace` from frame `skip_frames` on (see [`TimeScaleOps`]).
pub fn timescale_ops(trace: &Trace, spf: usize, skip_frames: usize) -> TimeScaleOps {
    let mut r = TimeScaleOps::default();
    for k in skip_frames.max(1)..trace.stats.len() {
        let Some(frame) = trace.audio.get(k * spf..(k + 1) * spf) else {
            break;
        };
        let (a, b) = (&trace.stats[k - 1], &trace.stats[k]);
        let ms = (b.accelerated_ms - a.accelerated_ms) + (b.decelerated_ms - a.decelerated_ms);
        let e = frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / spf as f64;
        let speech = e > 600.0f64.powi(2);
        r.speech_ticks += usize::from(speech);
        if ms > 0 {
            if speech {
                r.in_speech += 1;
                r.in_speech_ms += ms;
            } else {
                r.in_quiet += 1;
            }
        }
    }
    r
}
