//! Bounded, lock-free, single-producer single-consumer packet rings that **drop the oldest** packet on
//! overflow — the queues between the network shell and a session's media worker.
//!
//! Each slot is a small seqlock: the producer never waits (when the ring is full it overwrites the oldest
//! slot), and the consumer detects overwritten or half-written slots by their sequence stamp, skips them and
//! counts them as dropped. Slot data is stored in `AtomicU64` words, so there is no `unsafe` and no data race
//! even when the producer laps the consumer. Memory is allocated once, at construction; `push` and `pop`
//! never allocate, lock or make a syscall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Largest packet a slot holds (an RTP packet in one Ethernet-MTU UDP datagram).
pub const MAX_PACKET_LEN: usize = mediaproc_wire::rtp::MAX_RTP_PACKET_LEN;
const WORDS: usize = MAX_PACKET_LEN.div_ceil(8);

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

struct Slot {
    /// 2·i+1 while item i is being written, 2·i+2 once it is complete; 0 when never written.
    seq: AtomicU64,
    flow_id: AtomicU64,
    time_ns: AtomicU64,
    len: AtomicU64,
    data: Box<[AtomicU64]>,
}

struct Shared {
    slots: Box<[Slot]>,
    /// Number of items ever pushed.
    tail: AtomicU64,
    /// Number of items the consumer has moved past (popped or dropped); informational.
    head: AtomicU64,
    dropped: AtomicU64,
}

/// The writing end of a packet ring.
pub struct PacketProducer {
    shared: Arc<Shared>,
    next: u64,
}

/// The reading end of a packet ring.
pub struct PacketConsumer {
    shared: Arc<Shared>,
    next: u64,
}

impl std::fmt::Debug for PacketProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketProducer")
            .field("capacity", &self.shared.slots.len())
            .field("pushed", &self.next)
            .finish()
    }
}

impl std::fmt::Debug for PacketConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConsumer")
            .field("capacity", &self.shared.slots.len())
            .field("popped", &self.next)
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Creates a ring of `capacity` packet slots (at least 1).
pub fn packet_ring(capacity: usize) -> (PacketProducer, PacketConsumer) {
    let capacity = capacity.max(1);
    let slots = (0..capacity)
        .map(|_| Slot {
            seq: AtomicU64::new(0),
            flow_id: AtomicU64::new(0),
            time_ns: AtomicU64::new(0),
            len: AtomicU64::new(0),
            data: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
        })
        .collect();
    let shared = Arc::new(Shared {
        slots,
        tail: AtomicU64::new(0),
        head: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    (
        PacketProducer {
            shared: shared.clone(),
            next: 0,
        },
        PacketConsumer { shared, next: 0 },
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
    /// Packets lost to overflow so far (counted when the consumer passes over them).
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
        self.shared.slots.len()
    }

    /// Appends a packet; when the ring is full the oldest unread packet is overwritten (and counted as
    /// dropped by the consumer). Fails only for packets longer than [`MAX_PACKET_LEN`].
    pub fn push(
        &mut self,
        flow_id: u64,
        time_ns: u64,
        packet: &[u8],
    ) -> Result<(), PacketTooLarge> {
        if packet.len() > MAX_PACKET_LEN {
            return Err(PacketTooLarge(packet.len()));
        }
        let i = self.next;
        let slot = &self.shared.slots[(i % self.shared.slots.len() as u64) as usize];
        slot.seq.store(2 * i + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, chunk) in slot.data.iter().zip(packet.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        slot.flow_id.store(flow_id, Ordering::Relaxed);
        slot.time_ns.store(time_ns, Ordering::Relaxed);
        slot.len.store(packet.len() as u64, Ordering::Relaxed);
        slot.seq.store(2 * i + 2, Ordering::Release);
        self.next = i + 1;
        self.shared.tail.store(self.next, Ordering::Release);
        Ok(())
    }

    /// Packets pushed and not yet consumed (approximate while the consumer runs).
    pub fn len(&self) -> usize {
        let head = self.shared.head.load(Ordering::Relaxed);
        (self.next.saturating_sub(head) as usize).min(self.capacity())
    }

    /// True when nothing is waiting (approximate while the consumer runs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PacketConsumer {
    /// A view of the ring's counters.
    pub fn probe(&self) -> RingProbe {
        RingProbe(self.shared.clone())
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    /// Packets lost to overflow so far (the oldest ones, overwritten by the producer).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Packets waiting (may include some about to be overwritten).
    pub fn len(&self) -> usize {
        let tail = self.shared.tail.load(Ordering::Acquire);
        (tail.saturating_sub(self.next) as usize).min(self.capacity())
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn skip(&mut self, n: u64) {
        self.shared.dropped.fetch_add(n, Ordering::Relaxed);
        self.next += n;
    }

    /// Copies the oldest available packet into `out` (which should be [`MAX_PACKET_LEN`] long; a shorter
    /// buffer truncates the copy, `len` still tells the full length) and returns its metadata.
    pub fn pop(&mut self, out: &mut [u8]) -> Option<PacketMeta> {
        let cap = self.capacity() as u64;
        loop {
            let tail = self.shared.tail.load(Ordering::Acquire);
            if self.next >= tail {
                self.shared.head.store(self.next, Ordering::Relaxed);
                return None;
            }
            if tail - self.next > cap {
                self.skip(tail - self.next - cap);
                continue;
            }
            let i = self.next;
            let slot = &self.shared.slots[(i % cap) as usize];
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 != 2 * i + 2 {
                // Overwritten by a later item (or being overwritten): the packet is gone.
                self.skip(1);
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed) as usize;
            let flow_id = slot.flow_id.load(Ordering::Relaxed);
            let time_ns = slot.time_ns.load(Ordering::Relaxed);
            let n = len.min(out.len()).min(MAX_PACKET_LEN);
            for (word, chunk) in slot.data.iter().zip(out[..n].chunks_mut(8)) {
                let b = word.load(Ordering::Relaxed).to_ne_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != s1 {
                self.skip(1);
                continue;
            }
            self.next = i + 1;
            self.shared.head.store(self.next, Ordering::Relaxed);
            return Some(PacketMeta {
                flow_id,
                time_ns,
                len,
            });
        }
    }
}

#[cfg(test)]
mod tests {
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
        let mut got = Vec::new();
        while let Some(m) = c.pop(&mut out) {
            assert_eq!(out[..m.len], vec![m.flow_id as u8; 100][..]);
            got.push(m.flow_id);
        }
        assert_eq!(got, vec![5, 6, 7, 8]);
        assert_eq!(c.dropped(), 4);
        assert!(p.push(0, 0, &[0; MAX_PACKET_LEN + 1]).is_err());
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
}
