//! The per-packet work this crate does on the hot path allocates nothing: ring push/pop, RoQ and RTP parse
//! and write, reception statistics. Checked with a counting global allocator.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mediaproc_net::packet_ring;
use mediaproc_wire::stats::ReceiveStats;
use mediaproc_wire::{RoqDatagram, RtpPacket, roq};

struct Counting;

thread_local! {
    // Per thread, so that the test harness's own threads (spawning this test, timing it) do not count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator can be called while this thread's locals are being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn packet_path_does_not_allocate() {
    let (mut rx_p, mut rx_c) = packet_ring(64);
    let mut stats = ReceiveStats::default();
    let mut wire = [0u8; 1500];
    let mut out = [0u8; 1500];
    let payload = [0x42u8; 80];
    let before = allocs();
    for seq in 0..10_000u16 {
        // Edge side: RTP into a datagram.
        let p = RtpPacket::new(111, seq, u32::from(seq) * 960, 7, &payload);
        let n = roq::write_header(3, &mut wire).unwrap();
        let m = p.write(&mut wire[n..]).unwrap();
        // MP side: parse, account, queue; worker side: dequeue and parse.
        let d = RoqDatagram::parse(&wire[..n + m]).unwrap();
        let rtp = RtpPacket::parse(d.packet).unwrap();
        stats.on_packet(rtp.sequence, rtp.timestamp, u32::from(seq) * 960);
        rx_p.push(d.flow_id, u64::from(seq), d.packet).unwrap();
        if seq % 3 == 0 {
            while let Some(meta) = rx_c.pop(&mut out) {
                assert_eq!(
                    RtpPacket::parse(&out[..meta.len]).unwrap().payload,
                    &payload
                );
            }
        }
    }
    let allocs = allocs() - before;
    assert_eq!(allocs, 0, "{allocs} allocations on the packet path");
    assert_eq!(stats.received(), 10_000);
}
