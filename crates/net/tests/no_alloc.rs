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

/// The RTP/UDP edge as a worker drives it — `recvmsg` with its control messages, the strict-RTP and RTCP core,
/// `sendto` — allocates nothing per packet (the socket's control-message buffer is allocated at bind).
#[test]
fn rtp_udp_socket_path_does_not_allocate() {
    use std::time::{Duration, Instant};

    use mediaproc_net::{RtpUdpConfig, RtpUdpSocket, RxEvent};

    let origin = Instant::now();
    let config = RtpUdpConfig::opus("127.0.0.1:0".parse().unwrap(), 96);
    let mut sock = RtpUdpSocket::bind(&config, origin.elapsed()).unwrap();
    let to = sock.local_addr();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_nonblocking(true).unwrap();
    let payload = [0x42u8; 80];
    let mut wire = [0u8; 1500];
    let mut buf = [0u8; 1500];
    let mut back = [0u8; 1500];
    let mut counted = 0u64;
    for seq in 0..2_000u16 {
        let p = RtpPacket::new(96, seq, u32::from(seq) * 960, 0xabc, &payload);
        let n = p.write(&mut wire).unwrap();
        peer.send_to(&wire[..n], to).unwrap();
        let before = allocs();
        let mut got = None;
        // On loopback the datagram is queued within `send_to`; a few reads at most.
        for _ in 0..1000 {
            match sock.recv(origin.elapsed(), &mut buf) {
                RxEvent::Packet { len, .. } => {
                    got = Some(len);
                    break;
                }
                RxEvent::Consumed => {}
                RxEvent::Empty => std::thread::yield_now(),
            }
        }
        let len = got.expect("the datagram arrived");
        let now = origin.elapsed();
        assert!(sock.send(&buf[..len], now, now + Duration::from_micros(1)));
        assert_eq!(sock.recv(origin.elapsed(), &mut buf), RxEvent::Empty);
        // The first packet latches the peer (symmetric RTP); every packet counts from there on.
        if seq > 0 {
            counted += allocs() - before;
        }
        while peer.recv(&mut back).is_ok() {}
    }
    assert_eq!(counted, 0, "the RTP/UDP socket path allocated");
    let st = sock.stats().snapshot();
    assert_eq!((st.rx_packets, st.tx_packets), (2000, 2000));
}
