//! Per-stage and per-call-tick benchmarks of the real-time pipeline.
//!
//! Run: `cargo bench -p mediaproc-benches --bench pipeline`. Besides criterion's figures this prints the duplex
//! overhead ratio (pipeline tick ÷ bare libopus decode+encode of the same packets and frames, measured interleaved in
//! the same run; target ≤ 1.10) and the listen-only and silent-bot ratios.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mediaproc_pipeline::{
    BotEndpoint, EncoderSettings, FrameResampler, JitterBuffer, JitterConfig, MAX_PAYLOAD,
    MediaSession, OpusDecoder, OpusEncoder, ReceivedAudio, RtpPacketInfo, SampleRate,
    SessionConfig, inbound, mix_into, outbound,
};

const RATE: SampleRate = SampleRate::HZ_16000;
const SPF: usize = 320;

/// Speech-ish frames: a few harmonics with a moving pitch and a syllable envelope that never goes fully silent.
fn frames(n: usize) -> Vec<Vec<i16>> {
    let mut ph = [0.0f32; 8];
    (0..n)
        .map(|f| {
            (0..SPF)
                .map(|i| {
                    let t = (f * SPF + i) as f32 / 16_000.0;
                    let f0 = 150.0 + 40.0 * (t * 4.4).sin();
                    let env = 0.3 + 0.7 * (t * 12.0).sin().abs();
                    let mut v = 0.0;
                    for (k, p) in ph.iter_mut().enumerate() {
                        *p += 2.0 * std::f32::consts::PI * f0 * (k + 1) as f32 / 16_000.0;
                        v += p.sin() / (k + 1) as f32;
                    }
                    (v * env * 5000.0) as i16
                })
                .collect()
        })
        .collect()
}

fn packets(pcm: &[Vec<i16>]) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(RATE, EncoderSettings::default()).unwrap();
    let mut buf = [0u8; MAX_PAYLOAD];
    pcm.iter()
        .map(|f| {
            let n = enc.encode(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn rtp(n: u64) -> RtpPacketInfo {
    RtpPacketInfo {
        ssrc: 1,
        sequence: n as u16,
        timestamp: (n as u32).wrapping_mul(960),
        marker: false,
        payload_type: 111,
        audio_level: None,
        source_id: Some(7),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Bot {
    Talking,
    Silent,
    ListenOnly,
}

/// One call driven tick by tick: packet in → frame to bot → frame from bot → packet out.
struct Call {
    session: MediaSession,
    bot: BotEndpoint,
    out: ReceivedAudio,
    n: u64,
    mode: Bot,
}

impl Call {
    fn new(mode: Bot) -> Self {
        let (session, bot) = MediaSession::new(SessionConfig::default(), Duration::ZERO).unwrap();
        Self {
            session,
            bot,
            out: ReceivedAudio::new(RATE),
            n: 0,
            mode,
        }
    }

    fn tick(&mut self, pkts: &[Vec<u8>], pcm: &[Vec<i16>], silence: &[i16]) -> usize {
        let i = (self.n as usize) % pkts.len();
        let now = Duration::from_millis(self.n * 20);
        self.session.handle_packet(now, &rtp(self.n), &pkts[i]);
        match self.mode {
            Bot::Talking => self.bot.outbound.push(&pcm[i]).unwrap(),
            Bot::Silent => self.bot.outbound.push(silence).unwrap(),
            Bot::ListenOnly => {}
        }
        let mut sent = 0;
        while self.session.handle_tick(now + Duration::from_millis(5)) {
            while let Some(o) = self.session.poll_output() {
                if let mediaproc_pipeline::Output::Transmit(p) = o {
                    sent += p.payload.len();
                }
            }
        }
        while self.bot.inbound.pop(&mut self.out) {
            sent += usize::from(self.out.mixed()[0] == 1);
        }
        self.n += 1;
        sent
    }
}

/// Bare libopus: decode the same packet and encode the same frame with the same settings.
struct Bare {
    dec: OpusDecoder,
    enc: OpusEncoder,
    out: [i16; SPF],
    buf: [u8; MAX_PAYLOAD],
    n: usize,
}

impl Bare {
    fn new() -> Self {
        Self {
            dec: OpusDecoder::new(RATE).unwrap(),
            enc: OpusEncoder::new(RATE, EncoderSettings::default()).unwrap(),
            out: [0; SPF],
            buf: [0; MAX_PAYLOAD],
            n: 0,
        }
    }
    fn tick(&mut self, pkts: &[Vec<u8>], pcm: &[Vec<i16>], encode: bool) -> usize {
        let i = self.n % pkts.len();
        self.dec.decode(&pkts[i], &mut self.out).unwrap();
        let len = if encode {
            self.enc.encode(&pcm[i], &mut self.buf).unwrap()
        } else {
            0
        };
        self.n += 1;
        len + usize::from(self.out[0] == 1)
    }
}

fn stages(c: &mut Criterion) {
    let pcm = frames(500);
    let pkts = packets(&pcm);
    let mut g = c.benchmark_group("stage");

    let (mut op, mut oc) = outbound(500, RATE).unwrap();
    let mut frame = [0i16; SPF];
    g.bench_function("outbound ring push+pop (320 samples)", |b| {
        b.iter(|| {
            op.push(black_box(&pcm[0])).unwrap();
            oc.pop(black_box(&mut frame))
        })
    });
    let (mut ip, mut ic) = inbound(50, RATE, 4).unwrap();
    let mut f = ReceivedAudio::new(RATE);
    f.mixed_mut().copy_from_slice(&pcm[1]);
    let mut got = ReceivedAudio::new(RATE);
    g.bench_function("inbound ring push+pop (mixed only)", |b| {
        b.iter(|| {
            ip.push(black_box(&f));
            ic.pop(black_box(&mut got))
        })
    });

    let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
    let mut n = 0u32;
    g.bench_function("jitter insert+pop", |b| {
        b.iter(|| {
            let now = Duration::from_millis(u64::from(n) * 20);
            jb.insert(
                now,
                n as u16,
                n.wrapping_mul(960),
                black_box(&pkts[(n as usize) % 500]),
                None,
            );
            n += 1;
            matches!(
                black_box(jb.pop()),
                mediaproc_pipeline::Playout::Packet { .. }
            )
        })
    });

    let mut dec = OpusDecoder::new(RATE).unwrap();
    let mut out = [0i16; SPF];
    let mut k = 0;
    g.bench_function("opus decode 20 ms @16k", |b| {
        b.iter(|| {
            k = (k + 1) % 500;
            dec.decode(black_box(&pkts[k]), &mut out).unwrap();
        })
    });
    g.bench_function("opus PLC 20 ms @16k", |b| {
        b.iter(|| dec.conceal(black_box(&mut out)).unwrap())
    });

    let mut enc = OpusEncoder::new(RATE, EncoderSettings::default()).unwrap();
    let mut buf = [0u8; MAX_PAYLOAD];
    g.bench_function("opus encode 20 ms @16k (default: complexity 5)", |b| {
        b.iter(|| {
            k = (k + 1) % 500;
            enc.encode(black_box(&pcm[k]), &mut buf).unwrap()
        })
    });
    let mut enc0 = OpusEncoder::new(
        RATE,
        EncoderSettings {
            complexity: 0,
            ..EncoderSettings::default()
        },
    )
    .unwrap();
    g.bench_function("opus encode 20 ms @16k (complexity 0)", |b| {
        b.iter(|| {
            k = (k + 1) % 500;
            enc0.encode(black_box(&pcm[k]), &mut buf).unwrap()
        })
    });

    let mut rs =
        FrameResampler::new(SampleRate::HZ_48000, SampleRate::new(44_100).unwrap()).unwrap();
    let in48 = vec![1000i16; 960];
    let mut out441 = vec![0i16; 882];
    g.bench_function("resample 20 ms 48k -> 44.1k", |b| {
        b.iter(|| rs.process(black_box(&in48), &mut out441).unwrap())
    });
    let mut rs16 = FrameResampler::new(RATE, SampleRate::new(22_050).unwrap()).unwrap();
    let mut out22 = vec![0i16; 441];
    g.bench_function("resample 20 ms 16k -> 22.05k", |b| {
        b.iter(|| rs16.process(black_box(&pcm[3]), &mut out22).unwrap())
    });

    let mut acc = [0i32; SPF];
    let mut mixed = [0i16; SPF];
    g.bench_function("mix 4 speakers (saturating)", |b| {
        b.iter(|| {
            mix_into(
                black_box(&[&pcm[0][..], &pcm[1][..], &pcm[2][..], &pcm[3][..]]),
                &mut acc,
                &mut mixed,
            );
        })
    });
    g.finish();
}

fn ticks(c: &mut Criterion) {
    let pcm = frames(500);
    let pkts = packets(&pcm);
    let silence = vec![0i16; SPF];
    let mut g = c.benchmark_group("call tick");
    let mut bare = Bare::new();
    g.bench_function("bare libopus decode+encode", |b| {
        b.iter(|| bare.tick(&pkts, &pcm, true))
    });
    let mut call = Call::new(Bot::Talking);
    g.bench_function("duplex (talking bot)", |b| {
        b.iter(|| call.tick(&pkts, &pcm, &silence))
    });
    let mut bare_dec = Bare::new();
    g.bench_function("bare libopus decode", |b| {
        b.iter(|| bare_dec.tick(&pkts, &pcm, false))
    });
    let mut listen = Call::new(Bot::ListenOnly);
    g.bench_function("listen-only", |b| {
        b.iter(|| listen.tick(&pkts, &pcm, &silence))
    });
    let mut silent = Call::new(Bot::Silent);
    g.bench_function("silent bot (zeros queued)", |b| {
        b.iter(|| silent.tick(&pkts, &pcm, &silence))
    });
    g.finish();
    ratios(&pkts, &pcm, &silence);
}

/// Interleaved blocks of pipeline ticks and bare codec work; the median per-tick time of each and their ratio.
fn ratios(pkts: &[Vec<u8>], pcm: &[Vec<i16>], silence: &[i16]) {
    const BLOCK: usize = 500;
    const ROUNDS: usize = 40;
    let measure = |mode: Bot, encode: bool| {
        let mut call = Call::new(mode);
        let mut bare = Bare::new();
        for _ in 0..BLOCK {
            black_box(call.tick(pkts, pcm, silence));
            black_box(bare.tick(pkts, pcm, encode));
        }
        let mut t_call = Vec::with_capacity(ROUNDS);
        let mut t_bare = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..BLOCK {
                black_box(call.tick(pkts, pcm, silence));
            }
            t_call.push(t.elapsed().as_secs_f64() / BLOCK as f64);
            let t = Instant::now();
            for _ in 0..BLOCK {
                black_box(bare.tick(pkts, pcm, encode));
            }
            t_bare.push(t.elapsed().as_secs_f64() / BLOCK as f64);
        }
        t_call.sort_by(f64::total_cmp);
        t_bare.sort_by(f64::total_cmp);
        (t_call[ROUNDS / 2] * 1e6, t_bare[ROUNDS / 2] * 1e6)
    };
    let (duplex, bare_de) = measure(Bot::Talking, true);
    println!(
        "RATIO duplex tick {duplex:.1} us / bare decode+encode {bare_de:.1} us = {:.3} (target <= 1.10)",
        duplex / bare_de
    );
    let (listen, bare_d) = measure(Bot::ListenOnly, false);
    println!(
        "RATIO listen-only tick {listen:.1} us / bare decode {bare_d:.1} us = {:.3}",
        listen / bare_d
    );
    let (silent, bare_d2) = measure(Bot::Silent, false);
    println!(
        "RATIO silent-bot tick {silent:.1} us / bare decode {bare_d2:.1} us = {:.3}; vs talking duplex {:.2}",
        silent / bare_d2,
        silent / duplex
    );
    println!(
        "CAPACITY at 70 % of one core: listen-only {:.0} sessions, duplex {:.0} sessions (bare codec {:.0})",
        0.7 * 20_000.0 / listen,
        0.7 * 20_000.0 / duplex,
        0.7 * 20_000.0 / bare_de
    );
}

/// The playout engine per tick (sync buffer, decision, decode) and its time-scale operations alone, next to the bare
/// libopus decode of the same packets.
fn playout(c: &mut Criterion) {
    use mediaproc_pipeline::tsm::{PitchLags, best_period, insert_period, merge, remove_period};
    use mediaproc_pipeline::{Operation, PlayoutEngine};
    let pcm = frames(500);
    let pkts = packets(&pcm);
    let mut g = c.benchmark_group("playout");
    let mut dec = OpusDecoder::new(RATE).unwrap();
    let mut out = [0i16; SPF];
    let mut k = 0;
    g.bench_function("bare libopus decode 20 ms @16k", |b| {
        b.iter(|| {
            k = (k + 1) % 500;
            dec.decode(black_box(&pkts[k]), &mut out).unwrap();
        })
    });
    // One packet per tick, arriving 5 ms before it: the normal path (decode into the sync buffer, decide, output).
    let mut jb = JitterBuffer::new(JitterConfig {
        initial_delay_frames: 1,
        ..JitterConfig::default()
    })
    .unwrap();
    let mut engine = PlayoutEngine::new(16_000, SPF).unwrap();
    let mut n = 0u64;
    let mut normal = 0u64;
    let mut total = 0u64;
    g.bench_function("tick: normal (1 packet per tick)", |b| {
        b.iter(|| {
            let t = Duration::from_millis(n * 20);
            jb.insert(
                t,
                n as u16,
                (n as u32).wrapping_mul(960),
                &pkts[(n % 500) as usize],
                None,
            );
            let r = engine.tick(&mut jb, &mut dec, t + Duration::from_millis(5), &mut out);
            normal += u64::from(r.operation == Operation::Normal);
            total += 1;
            n += 1;
            black_box(r)
        })
    });
    println!("PLAYOUT normal ticks: {normal} of {total}");
    // Five packets per four ticks (a sender 25 % fast): the level keeps rising and the engine accelerates on most
    // ticks (two decodes and a pitch-period removal each).
    let mut jb = JitterBuffer::new(JitterConfig {
        initial_delay_frames: 1,
        ..JitterConfig::default()
    })
    .unwrap();
    let mut engine = PlayoutEngine::new(16_000, SPF).unwrap();
    let (mut tick, mut sent) = (0u64, 0u64);
    let (mut acc, mut total) = (0u64, 0u64);
    g.bench_function("tick: accelerating (5 packets per 4 ticks)", |b| {
        b.iter(|| {
            let t = Duration::from_millis(tick * 20);
            while sent * 4 < (tick + 1) * 5 {
                jb.insert(
                    t,
                    sent as u16,
                    (sent as u32).wrapping_mul(960),
                    &pkts[(sent % 500) as usize],
                    None,
                );
                sent += 1;
            }
            let r = engine.tick(&mut jb, &mut dec, t + Duration::from_millis(5), &mut out);
            acc += u64::from(r.operation == Operation::Accelerate);
            total += 1;
            tick += 1;
            black_box(r)
        })
    });
    println!("PLAYOUT accelerate ticks: {acc} of {total}");
    // The operations alone on 40 ms of decoded speech-like audio.
    let lags = PitchLags::for_rate(16_000);
    let mut decoded = vec![0i16; 2 * SPF];
    dec.decode(&pkts[10], &mut decoded[..SPF]).unwrap();
    dec.decode(&pkts[11], &mut decoded[SPF..]).unwrap();
    let mut work = vec![0i16; 3 * SPF];
    g.bench_function("op: accelerate (pitch search + removal, 40 ms)", |b| {
        b.iter(|| {
            work[..2 * SPF].copy_from_slice(&decoded);
            let p = best_period(black_box(&work[..2 * SPF]), lags, lags.max).unwrap();
            remove_period(&mut work, 2 * SPF, p.lag)
        })
    });
    g.bench_function(
        "op: preemptive expand (pitch search + insertion, 40 ms)",
        |b| {
            b.iter(|| {
                work[..2 * SPF].copy_from_slice(&decoded);
                let p = best_period(black_box(&work[..2 * SPF]), lags, lags.max).unwrap();
                insert_period(&mut work, 2 * SPF, p.lag)
            })
        },
    );
    let history = decoded[..SPF].to_vec();
    g.bench_function("op: merge (continuation, alignment, cross-fade)", |b| {
        b.iter(|| {
            work[..SPF].copy_from_slice(&decoded[SPF..]);
            merge(black_box(&history), &mut work, SPF, lags, 16_000)
        })
    });
    g.bench_function("op: expand (libopus PLC 20 ms)", |b| {
        b.iter(|| dec.conceal(black_box(&mut out)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = stages, ticks, playout
}
criterion_main!(benches);
