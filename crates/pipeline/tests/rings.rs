//! Model-based property tests of the outbound ring (bot input is untrusted: any sequence of push, clear, mark and
//! pop must behave like the simple model and never panic) and of the inbound ring's drop-oldest policy (any push/pop
//! sequence behaves like a `VecDeque` that drops its front when full, every drop counted).
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use mediaproc_pipeline::{
    Error, INBOUND_RESUME_FRAMES, MAX_MARK_NAME_LEN, MAX_UNMIXED, ReceivedAudio, SampleRate,
    inbound, outbound,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Clear,
    Mark(usize),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (300usize..340).prop_map(Op::Push),
        1 => Just(Op::Clear),
        1 => (0usize..80).prop_map(Op::Mark),
        4 => Just(Op::Pop),
    ]
}

proptest! {
    #[test]
    fn outbound_ring_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        const CAP: usize = 8;
        let rate = SampleRate::HZ_16000;
        let (mut p, mut c) = outbound(CAP, rate).unwrap();
        // Model: queued frame ids; marks as (name, frames pushed before it).
        let mut frames: VecDeque<u16> = VecDeque::new();
        let mut marks: VecDeque<(String, u64, bool)> = VecDeque::new();
        let mut next_id = 1u16;
        let mut pushed = 0u64;
        let mut popped = 0u64;
        let mut out = [0i16; 320];
        for op in ops {
            match op {
                Op::Push(len) => {
                    let frame = vec![next_id as i16; len];
                    let r = p.push(&frame);
                    if len != 320 {
                        prop_assert!(matches!(r, Err(Error::FrameLength { .. })), "{:?}", r);
                    } else if frames.len() == CAP {
                        prop_assert!(matches!(r, Err(Error::OutboundFull { capacity_frames: CAP })), "{:?}", r);
                    } else {
                        prop_assert!(r.is_ok());
                        frames.push_back(next_id);
                        next_id += 1;
                        pushed += 1;
                    }
                }
                Op::Clear => {
                    p.clear();
                    popped += frames.len() as u64;
                    frames.clear();
                    for m in marks.iter_mut() {
                        m.2 = true;
                    }
                }
                Op::Mark(len) => {
                    let name = "m".repeat(len);
                    let r = p.mark(&name);
                    if len > MAX_MARK_NAME_LEN {
                        prop_assert!(matches!(r, Err(Error::MarkNameTooLong { .. })), "{r:?}");
                    } else if r.is_ok() {
                        marks.push_back((name, pushed, false));
                    } else {
                        prop_assert!(matches!(r, Err(Error::MarksFull { .. })), "{:?}", r);
                    }
                }
                Op::Pop => {
                    let got = c.pop(&mut out);
                    match frames.pop_front() {
                        Some(id) => {
                            prop_assert!(got);
                            prop_assert_eq!(out[0], id as i16);
                            popped += 1;
                        }
                        None => prop_assert!(!got),
                    }
                    // Marks due: cleared ones, or those whose preceding frames have all been taken.
                    while let Some(m) = c.next_due_mark() {
                        let (name, at, cleared) = marks.pop_front().unwrap();
                        prop_assert_eq!(m.name.as_str(), name.as_str());
                        prop_assert_eq!(m.cleared, cleared);
                        prop_assert!(cleared || at <= popped);
                    }
                    if let Some((_, at, cleared)) = marks.front() {
                        prop_assert!(!*cleared && *at > popped, "a due mark was not reported");
                    }
                }
            }
        }
    }

    #[test]
    fn inbound_ring_keeps_newest_in_order(pattern in proptest::collection::vec(0usize..4, 1..300)) {
        // `pattern[i]` = how many frames the bot pops after push i (a bursty, sometimes stalled bot).
        let rate = SampleRate::HZ_8000;
        let (mut p, mut c) = inbound(6, rate, 1).unwrap();
        let mut f = ReceivedAudio::new(rate);
        let mut out = ReceivedAudio::new(rate);
        let mut last: Option<u64> = None;
        let mut received = 0u64;
        let total = pattern.len() as u64;
        for (i, pops) in pattern.into_iter().enumerate() {
            f.info.sequence = i as u64;
            f.clear_unmixed();
            f.push_unmixed(3).unwrap().fill(i as i16);
            p.push(&f);
            for _ in 0..pops {
                if c.pop(&mut out) {
                    prop_assert!(last.is_none_or(|l| out.info.sequence > l), "order");
                    prop_assert_eq!(out.unmixed(0).unwrap().1[0], out.info.sequence as i16);
                    last = Some(out.info.sequence);
                    received += 1;
                }
            }
        }
        // Drain: the newest frame always arrives, in order, and every frame is either delivered or counted as
        // dropped.
        while c.pop(&mut out) {
            prop_assert!(last.is_none_or(|l| out.info.sequence > l));
            last = Some(out.info.sequence);
            received += 1;
        }
        prop_assert_eq!(p.queued(), 0);
        prop_assert_eq!(last, Some(total - 1));
        prop_assert_eq!(received + c.dropped(), total);
    }

    #[test]
    fn inbound_ring_matches_drop_oldest_model(
        cap in 1usize..8,
        max_unmixed in 0usize..=MAX_UNMIXED,
        ops in proptest::collection::vec(
            prop_oneof![3 => (0usize..=MAX_UNMIXED).prop_map(Some), 2 => Just(None)],
            1..300,
        ),
    ) {
        // `Some(k)`: push a frame with k unmixed streams; `None`: the bot pops one. The model is a `VecDeque` that
        // drops its front when full, and at a pop after a drop keeps only the newest INBOUND_RESUME_FRAMES; drops
        // must be counted exactly, at once, and streams beyond `max_unmixed` cut.
        let rate = SampleRate::HZ_8000;
        let (mut p, mut c) = inbound(cap, rate, max_unmixed).unwrap();
        let mut model: VecDeque<(u64, usize)> = VecDeque::new();
        let mut dropped = 0u64;
        let mut seen_dropped = 0u64;
        let mut next = 0u64;
        let mut f = ReceivedAudio::new(rate);
        let mut out = ReceivedAudio::new(rate);
        for op in ops {
            match op {
                Some(k) => {
                    f.info.sequence = next;
                    f.mixed_mut().fill(next as i16);
                    f.clear_unmixed();
                    for s in 0..k {
                        f.push_unmixed(100 + s as u32).unwrap().fill(next as i16 + s as i16 + 1);
                    }
                    p.push(&f);
                    if model.len() == cap {
                        model.pop_front();
                        dropped += 1;
                    }
                    model.push_back((next, k.min(max_unmixed)));
                    next += 1;
                }
                None => match (c.pop(&mut out), {
                    if dropped != seen_dropped {
                        while model.len() > INBOUND_RESUME_FRAMES {
                            model.pop_front();
                            dropped += 1;
                        }
                        seen_dropped = dropped;
                    }
                    model.pop_front()
                }) {
                    (true, Some((seq, k))) => {
                        prop_assert_eq!(out.info.sequence, seq);
                        prop_assert!(out.mixed().iter().all(|&s| s == seq as i16));
                        prop_assert_eq!(out.unmixed_len(), k);
                        for s in 0..k {
                            let (id, samples) = out.unmixed(s).unwrap();
                            prop_assert_eq!(id, 100 + s as u32);
                            prop_assert!(samples.iter().all(|&x| x == seq as i16 + s as i16 + 1));
                        }
                    }
                    (false, None) => {}
                    (got, want) => prop_assert!(false, "popped {}, model {:?}", got, want),
                },
            }
            prop_assert_eq!(c.queued(), model.len());
            prop_assert_eq!(p.queued(), model.len());
            prop_assert_eq!(c.dropped(), dropped);
            prop_assert_eq!(p.dropped(), dropped);
        }
    }
}
