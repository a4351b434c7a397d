//! Criterion micro-benchmarks of the inbound (call → bot, drop-oldest) frame ring: one frame pushed and popped
//! (the steady state of a bot that keeps up), with and without unmixed streams, and a push into a full ring (the
//! overflow path of a stalled bot).
//!
//! Run: `cargo bench -p mediaproc-pipeline --bench ring`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use mediaproc_pipeline::{DEFAULT_INBOUND_CAPACITY_FRAMES, ReceivedAudio, SampleRate, inbound};

fn frame(rate: SampleRate, unmixed: usize) -> ReceivedAudio {
    let mut f = ReceivedAudio::new(rate);
    f.mixed_mut().fill(7);
    let ids: Vec<u32> = (1..=unmixed as u32).collect();
    f.set_active_speakers(&ids);
    for id in ids {
        f.push_unmixed(id).unwrap().fill(id as i16);
    }
    f
}

fn rings(c: &mut Criterion) {
    let rate = SampleRate::HZ_16000;
    for unmixed in [0usize, 2] {
        let (mut p, mut q) = inbound(DEFAULT_INBOUND_CAPACITY_FRAMES, rate, unmixed).unwrap();
        let mut f = frame(rate, unmixed);
        let mut out = ReceivedAudio::new(rate);
        c.bench_function(&format!("inbound_push_pop_16k_unmixed{unmixed}"), |b| {
            b.iter(|| {
                f.info.sequence += 1;
                p.push(black_box(&f));
                assert!(q.pop(&mut out));
                out.info.sequence
            })
        });
    }
    // A stalled bot: the ring stays full and every push drops the oldest frame.
    let (mut p, q) = inbound(DEFAULT_INBOUND_CAPACITY_FRAMES, rate, 0).unwrap();
    let mut f = frame(rate, 0);
    for _ in 0..2 * DEFAULT_INBOUND_CAPACITY_FRAMES {
        p.push(&f);
    }
    c.bench_function("inbound_push_full_16k", |b| {
        b.iter(|| {
            f.info.sequence += 1;
            p.push(black_box(&f));
        })
    });
    black_box(q.dropped());
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    rings(&mut c);
    c.final_summary();
}
