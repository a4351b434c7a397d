//! Bounded, lock-free packet rings that **drop the oldest** packet on overflow — the queues between the network
//! shell and a session's media worker.
//!
//! The design is the project's one drop-oldest ring (the pipeline's inbound frame ring is the same):
//! a [`crossbeam_queue::ArrayQueue`] filled with [`ArrayQueue::force_push`]. The producer never waits: when the
//! queue is full, `force_push` swaps the oldest packet out atomically and hands it back, and the producer counts it
//! as dropped on the spot, so the count is exact and visible through [`RingProbe`] (session statistics, `/metrics`)
//! before the consumer runs. The consumer only ever sees whole packets, in order, because a buffer changes hands
//! whole: there is no torn-read detection to get wrong and no `unsafe` in this module (the lock-free part is
//! crossbeam's, well reviewed and widely used).
//!
//! The queue carries pre-allocated packet buffers (`PacketSlot`: [`MAX_PACKET_LEN`] bytes and the [`PacketMeta`]),
//! recycled through a second `ArrayQueue`, the free list: the producer takes a free buffer, copies the packet in,
//! `force_push`es it and returns a displaced buffer to the free list; the consumer pops a buffer, copies the packet
//! out and returns it. The pool holds capacity + 2 buffers, so the producer always finds one (see [`packet_ring`]).
//! Only pointers move through the queues and only the packet's own bytes are copied; storing 1.5 KB slots inline
//! in the queue measured twice as slow per packet (every push and pop moves the whole slot). Memory is allocated
//! once, at construction (≈ 1.5 KB × (capacity + 2)); `push` and `pop` never allocate, lock or make a syscall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Largest packet a slot holds (an RTP packet in one Ethernet-MTU UDP datagram).
pub const MAX_PACKET_LEN: usize = mediaproc_wire::rtp::MAX_RTP_PACKET_LEN;

/// Default capacity of a session's receive ring (edge → media worker): 64 packets, 1.28 s of 20 ms audio.
pub const RX_RING_CAPACITY: usize = 64;
/// Default capacity of a session's transmit ring (media worker → edge): 32 packets, 640 ms of 20 ms audio.
pub const TX_RING_CAPACITY: usize = 32;

/// What travels with a packet through a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// The flow the packet belongs to (QUIC flow id; 0 on the plain RTP/UDP endpoint).
    pub flow_id: u64,
    /// Arrival (receive rings) or enqueue (transmit rings) time in nanoseconds since the clock origin of the
    /// endpoint that owns the ring (see `MediaServer::clock_origin`).
    pub time_ns: u64,
    /// Packet length in bytes.
    pub len: usize,
}

/// One packet buffer of the ring's pool.
struct PacketSlot {
    meta: PacketMeta,
    data: [u8; MAX_PACKET_LEN],
}

struct Shared {
    /// Packets for the consumer, oldest first; `force_push` displaces the oldest when full.
    queue: ArrayQueue<Box<PacketSlot>>,
    /// Empty buffers. Its capacity is the whole pool, so returning a buffer never fails.
    free: ArrayQueue<Box<PacketSlot>>,
    /// Packets displaced by `force_push`, counted by the producer when it displaces them.
    dropped: AtomicU64,
}

/// The writing end of a packet ring.
pub struct PacketProducer {
    shared: Arc<Shared>,
    pushed: u64,
}

/// The reading end of a packet ring.
pub struct PacketConsumer {
    shared: Arc<Shared>,
    popped: u64,
}

impl std::fmt::Debug for PacketProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketProducer")
            .field("capacity", &self.capacity())
            .field("pushed", &self.pushed)
            .finish()
    }
}

impl std::fmt::Debug for PacketConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConsumer")
            .field("capacity", &self.capacity())
            .field("popped", &self.popped)
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Creates a ring of `capacity` packet slots (at least 1).
pub fn packet_ring(capacity: usize) -> (PacketProducer, PacketConsumer) {
    let capacity = capacity.max(1);
    // Pool = capacity + 2. A buffer is in the queue (at most `capacity`), held by the consumer while it copies a
    // packet out (at most one), held by the producer while it fills one (at most one: `force_push` takes the new
    // buffer and hands back the displaced one in a single step), or free. So when the producer goes to take a
    // buffer (holding none) at least one is free: it never has to refuse the new packet.
    let pool = capacity + 2;
    let free = ArrayQueue::new(pool);
    for _ in 0..pool {
        // The free list has room for the whole pool.
        let _ = free.push(Box::new(PacketSlot {
            meta: PacketMeta::default(),
            data: [0; MAX_PACKET_LEN],
        }));
    }
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(capacity),
        free,
        dropped: AtomicU64::new(0),
    });
    (
        PacketProducer {
            shared: shared.clone(),
            pushed: 0,
        },
        PacketConsumer { shared, popped: 0 },
    )
}

/// A read-only view of a ring's counters, for statistics: held by [`crate::SessionStats`] so that overflow
/// is visible in snapshots without the network task or the worker copying counters around.
#[derive(Clone)]
pub struct RingProbe(Arc<Shared>);

impl std::fmt::Debug for RingProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingProbe")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl RingProbe {
    /// Packets lost to overflow so far (counted when a newer packet displaces them).
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketTooLarge(pub usize);

impl PacketProducer {
    /// A view of the ring's counters.
    pub fn probe(&self) -> RingProbe {
        RingProbe(self.shared.clone())
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    /// Appends a packet; when the ring is full the oldest unread packet is displaced and counted as dropped.
    /// Fails only for packets longer than [`MAX_PACKET_LEN`].
    pub fn push(
        &mut self,
        flow_id: u64,
        time_ns: u64,
        packet: &[u8],
    ) -> Result<(), PacketTooLarge> {
        let len = packet.len();
        if len > MAX_PACKET_LEN {
            return Err(PacketTooLarge(len));
        }
        let Some(mut slot) = self.shared.free.pop() else {
            // Unreachable by the pool's sizing (see `packet_ring`); if it ever happened the packet is lost, and
            // counted.
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        slot.meta = PacketMeta {
            flow_id,
            time_ns,
            len,
        };
        slot.data[..len].copy_from_slice(packet);
        if let Some(old) = self.shared.queue.force_push(slot) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            // `free` has room for every buffer of the pool, so this cannot fail.
            let _ = self.shared.free.push(old);
        }
        self.pushed += 1;
        Ok(())
    }

    /// Packets pushed and not yet consumed (a snapshot while the consumer runs).
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// True when nothing is waiting (a snapshot while the consumer runs).
    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }
}

impl PacketConsumer {
    /// A view of the ring's counters.
    pub fn probe(&self) -> RingProbe {
        RingProbe(self.shared.clone())
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    /// Packets lost to overflow so far (the oldest ones, displaced by the producer).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Packets waiting (a snapshot while the producer runs).
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }

    /// Copies the oldest packet into `out` (which should be [`MAX_PACKET_LEN`] long; a shorter buffer truncates
    /// the copy, `len` still tells the full length) and returns its metadata.
    pub fn pop(&mut self, out: &mut [u8]) -> Option<PacketMeta> {
        let slot = self.shared.queue.pop()?;
        let meta = slot.meta;
        let n = meta.len.min(out.len());
        out[..n].copy_from_slice(&slot.data[..n]);
        // `free` has room for every buffer of the pool, so this cannot fail.
        let _ = self.shared.free.push(slot);
        self.popped += 1;
        Some(meta)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn fifo_then_drop_oldest() {
        let (mut p, mut c) = packet_ring(4);
        let mut out = [0u8; MAX_PACKET_LEN];
        for i in 0..3u8 {
            p.push(u64::from(i), 10 + u64::from(i), &[i; 13]).unwrap();
        }
        assert_eq!(c.len(), 3);
        let m = c.pop(&mut out).unwrap();
        assert_eq!((m.flow_id, m.time_ns, m.len), (0, 10, 13));
        assert_eq!(&out[..13], &[0u8; 13]);
        // Overflow: push 6 more into a ring of 4 holding 2 → the 4 oldest unread are dropped.
        for i in 3..9u8 {
            p.push(u64::from(i), 0, &[i; 100]).unwrap();
        }
        // Counted as they are displaced, before the consumer looks.
        assert_eq!(p.probe().dropped(), 4);
        assert_eq!(p.len(), 4);
        let mut got = Vec::new();
        while let Some(m) = c.pop(&mut out) {
            assert_eq!(out[..m.len], vec![m.flow_id as u8; 100][..]);
            got.push(m.flow_id);
        }
        assert_eq!(got, vec![5, 6, 7, 8]);
        assert_eq!(c.dropped(), 4);
        assert!(p.push(0, 0, &[0; MAX_PACKET_LEN + 1]).is_err());
        // A short output buffer truncates the copy and still reports the full length.
        p.push(9, 0, &[9; 40]).unwrap();
        let mut short = [0u8; 16];
        assert_eq!(c.pop(&mut short).map(|m| m.len), Some(40));
        assert_eq!(short, [9; 16]);
        assert!(c.is_empty() && p.is_empty());
    }

    #[test]
    fn lapped_consumer_resumes_with_the_newest() {
        // The producer laps a stalled consumer many times over: the consumer gets exactly the last `capacity`
        // packets, in order, and everything else is counted.
        let (mut p, mut c) = packet_ring(8);
        for i in 0..1000u64 {
            p.push(i, i, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(c.len(), 8);
        let mut out = [0u8; MAX_PACKET_LEN];
        let got: Vec<u64> = std::iter::from_fn(|| c.pop(&mut out).map(|m| m.flow_id)).collect();
        assert_eq!(got, (992..1000).collect::<Vec<_>>());
        assert_eq!(c.dropped(), 992);
    }

    #[test]
    fn threads_never_see_torn_packets() {
        let (mut p, mut c) = packet_ring(8);
        let n = 200_000u64;
        let t = std::thread::spawn(move || {
            for i in 0..n {
                let len = 1 + (i % 300) as usize;
                let b = (i % 251) as u8;
                p.push(i, i, &vec![b; len]).unwrap();
            }
        });
        let mut out = [0u8; MAX_PACKET_LEN];
        let mut last = None;
        let mut got = 0u64;
        loop {
            if let Some(m) = c.pop(&mut out) {
                let i = m.flow_id;
                assert_eq!(m.time_ns, i);
                assert_eq!(m.len, 1 + (i % 300) as usize);
                assert!(
                    out[..m.len].iter().all(|x| *x == (i % 251) as u8),
                    "torn packet {i}"
                );
                if let Some(l) = last {
                    assert!(i > l, "out of order");
                }
                last = Some(i);
                got += 1;
                if i == n - 1 {
                    break;
                }
            } else if t.is_finished() && c.is_empty() {
                break;
            }
        }
        t.join().unwrap();
        assert_eq!(got + c.dropped(), n);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..=MAX_PACKET_LEN + 4).prop_map(Op::Push),
            2 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// Any push/pop sequence behaves like a `VecDeque` that drops its front when full, and every drop is
        /// counted exactly.
        #[test]
        fn matches_drop_oldest_model(cap in 1usize..10, ops in proptest::collection::vec(op(), 1..300)) {
            let (mut p, mut c) = packet_ring(cap);
            let mut model: VecDeque<(u64, usize)> = VecDeque::new();
            let mut dropped = 0u64;
            let mut next = 0u64;
            let mut out = [0u8; MAX_PACKET_LEN];
            for op in ops {
                match op {
                    Op::Push(len) => {
                        let r = p.push(next, next * 3, &vec![next as u8; len]);
                        if len > MAX_PACKET_LEN {
                            prop_assert_eq!(r, Err(PacketTooLarge(len)));
                        } else {
                            prop_assert!(r.is_ok());
                            if model.len() == cap {
                                model.pop_front();
                                dropped += 1;
                            }
                            model.push_back((next, len));
                        }
                        next += 1;
                    }
                    Op::Pop => match (c.pop(&mut out), model.pop_front()) {
                        (Some(m), Some((id, len))) => {
                            prop_assert_eq!(m, PacketMeta { flow_id: id, time_ns: id * 3, len });
                            prop_assert!(out[..len].iter().all(|b| *b == id as u8));
                        }
                        (None, None) => {}
                        (got, want) => prop_assert!(false, "got {:?}, model {:?}", got, want),
                    },
                }
                prop_assert_eq!(c.len(), model.len());
                prop_assert_eq!(c.dropped(), dropped);
                prop_assert_eq!(p.probe().dropped(), dropped);
            }
        }
    }
}
