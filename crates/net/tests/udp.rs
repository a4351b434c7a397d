//! The plain RTP/UDP edge (the worker-driven socket) against a raw UDP peer. The tests poll the socket the way
//! a media worker does at its ticks, on their own monotonic clock.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use mediaproc_net::{RtpUdpConfig, RtpUdpSocket, RxEvent, SessionStatsSnapshot};
use mediaproc_wire::control::Codec;
use mediaproc_wire::{RtpPacket, g711, rtcp};

fn pcmu_config() -> RtpUdpConfig {
    RtpUdpConfig {
        payload_type: g711::PT_PCMU,
        codec: Codec::Pcmu,
        ..RtpUdpConfig::opus("127.0.0.1:0".parse().unwrap(), 0)
    }
}

fn tone(n: usize, phase: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            ((((i + phase) as f64) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0)
                as i16
        })
        .collect()
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let p = RtpPacket::new(pt, seq, ts, ssrc, payload);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

/// The socket under test and its clock.
struct Edge {
    sock: RtpUdpSocket,
    origin: Instant,
}

impl Edge {
    fn bind(config: RtpUdpConfig) -> Self {
        let origin = Instant::now();
        Self {
            sock: RtpUdpSocket::bind(&config, origin.elapsed()).unwrap(),
            origin,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn stats(&self) -> SessionStatsSnapshot {
        self.sock.stats().snapshot()
    }

    /// Polls (every millisecond, as ticks would) until one RTP packet is delivered: its bytes and arrival.
    fn next_packet(&mut self) -> (Vec<u8>, Duration) {
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.sock.recv(self.now(), &mut buf) {
                RxEvent::Packet { len, arrival } => return (buf[..len].to_vec(), arrival),
                RxEvent::Consumed => {}
                RxEvent::Empty => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        panic!("no packet arrived; stats {:?}", self.stats());
    }

    /// Polls until `cond` holds on the statistics (5 s at most); returns the packets delivered meanwhile.
    fn poll_until(&mut self, what: &str, cond: impl Fn(&SessionStatsSnapshot) -> bool) -> usize {
        let mut buf = [0u8; 1500];
        let mut delivered = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.now();
            delivered += self.sock.poll_rx(now, &mut buf, 1024, |_, _| {});
            if cond(&self.stats()) {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {what}; {:?}",
                self.stats()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn symmetric_rtp_with_g711() {
    let mut ep = Edge::bind(pcmu_config());
    let to = ep.sock.local_addr();
    let peer = peer();

    // Before the peer sent anything there is nowhere to send: counted, not sent.
    let now = ep.now();
    assert!(
        !ep.sock
            .send(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], now, now)
    );
    assert_eq!(ep.stats().tx_dropped, 1);

    // Peer → endpoint: 20 ms of µ-law.
    let pcm = tone(160, 0);
    let mut payload = [0u8; 160];
    g711::ulaw_encode_slice(&pcm, &mut payload);
    peer.send_to(&packet(0, 1, 160, 0xabc, &payload), to)
        .unwrap();
    let (got, _) = ep.next_packet();
    let rp = RtpPacket::parse(&got).unwrap();
    let mut decoded = [0i16; 160];
    g711::ulaw_decode_slice(rp.payload, &mut decoded);
    let err: i64 = decoded
        .iter()
        .zip(&pcm)
        .map(|(a, b)| (i64::from(*a) - i64::from(*b)).abs())
        .max()
        .unwrap();
    assert!(err < 300, "µ-law error {err}");

    // Endpoint → peer: replies go to where the packet came from.
    let now = ep.now();
    assert!(ep.sock.send(&packet(0, 77, 320, 0xdef, &payload), now, now));
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(from, to);
    assert_eq!(RtpPacket::parse(&buf[..n]).unwrap().sequence, 77);

    // Wrong payload type, garbage and RTCP are sorted and counted, never delivered as audio.
    peer.send_to(&packet(96, 2, 320, 0xabc, b"opus?"), to)
        .unwrap();
    peer.send_to(&[0x12, 0x34, 0x56], to).unwrap();
    let mut rr = [0u8; 64];
    let n = rtcp::write_receiver_report(0xabc, &[], &mut rr).unwrap();
    peer.send_to(&rr[..n], to).unwrap();
    let delivered = ep.poll_until("three datagrams sorted", |st| {
        st.rx_unexpected + st.rx_malformed + st.rx_rtcp == 3
    });
    assert_eq!(delivered, 0);
    let st = ep.stats();
    assert_eq!(
        (st.rx_packets, st.rx_unexpected, st.rx_malformed, st.rx_rtcp),
        (1, 1, 1, 1)
    );
    assert_eq!((st.tx_packets, st.tx_dropped), (1, 1));
}

/// A datagram read long after it arrived keeps its arrival time (the kernel's receive timestamp), so the jitter
/// buffer sees true arrivals whenever the worker reads the socket.
#[test]
fn arrival_is_the_kernels_receive_time_not_the_read() {
    let mut ep = Edge::bind(pcmu_config());
    let to = ep.sock.local_addr();
    let peer = peer();
    // The kernel switches receive timestamps on system-wide asynchronously when the first socket asks (and off
    // when the last closes, as other tests' do): until then a datagram is stamped when it is read. Wait for the
    // switch with probes (bounded), then measure a fresh datagram.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        peer.send_to(&packet(0, 0, 0, 0xabc, &[0xff; 160]), to)
            .unwrap();
        let sent = ep.now();
        while ep.now() < sent + Duration::from_millis(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (_, arrival) = ep.next_packet();
        if arrival <= sent + Duration::from_millis(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel never stamped a datagram"
        );
    }
    let before = ep.now();
    peer.send_to(&packet(0, 1, 160, 0xabc, &[0xff; 160]), to)
        .unwrap();
    // On loopback the datagram is queued (and stamped) within `send_to`.
    let sent = ep.now();
    // Let it wait in the kernel's queue as it would between two ticks.
    while ep.now() < sent + Duration::from_millis(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let read = ep.now();
    let (_, arrival) = ep.next_packet();
    // Never later than the send returned (1 ms for the two clocks' rates and reads), well before the read.
    assert!(
        arrival <= sent + Duration::from_millis(1),
        "arrival {arrival:?} after the send returned at {sent:?}"
    );
    assert!(
        arrival + Duration::from_millis(25) <= read,
        "arrival {arrival:?} is the read time {read:?}, not the kernel's"
    );
    // And not absurdly early either (a worker stall is bounded by `MAX_KERNEL_WAIT` anyway).
    assert!(
        arrival + Duration::from_secs(1) >= before,
        "arrival {arrival:?} long before the send at {before:?}"
    );
}

#[test]
fn configured_remote_and_pcma() {
    let peer = peer();
    let cfg = RtpUdpConfig {
        remote: Some(peer.local_addr().unwrap()),
        payload_type: g711::PT_PCMA,
        codec: Codec::Pcma,
        ..pcmu_config()
    };
    let mut ep = Edge::bind(cfg);
    let pcm = tone(160, 40);
    let mut payload = [0u8; 160];
    g711::alaw_encode_slice(&pcm, &mut payload);
    for seq in 0..5u16 {
        let now = ep.now();
        assert!(
            ep.sock
                .send(&packet(8, seq, u32::from(seq) * 160, 1, &payload), now, now)
        );
    }
    let mut buf = [0u8; 1500];
    for seq in 0..5u16 {
        let n = peer
            .recv(&mut buf)
            .unwrap_or_else(|_| panic!("stats {:?}", ep.stats()));
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!((p.payload_type, p.sequence), (8, seq));
        let mut d = [0i16; 160];
        g711::alaw_decode_slice(p.payload, &mut d);
        let err = d
            .iter()
            .zip(&pcm)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(err < 300, "A-law error {err}");
    }
    assert_eq!(ep.stats().tx_packets, 5);
}

#[test]
fn rtcp_reports_and_round_trip_time() {
    use mediaproc_wire::rtcp::{ReportBlock, RtcpPacket, SenderInfo};
    let cfg = RtpUdpConfig {
        rtcp_interval: Some(Duration::from_millis(100)),
        ..pcmu_config()
    };
    let mut ep = Edge::bind(cfg);
    let to = ep.sock.local_addr();
    let peer = peer();
    let payload = [0xffu8; 160];
    for seq in (0..6u16).filter(|q| *q != 2) {
        peer.send_to(&packet(0, seq, u32::from(seq) * 160, 0xabc, &payload), to)
            .unwrap();
    }
    let mut sr = [0u8; 64];
    let info = SenderInfo {
        ntp_timestamp: 0x0000_1234_5678_0000,
        ..Default::default()
    };
    let n = rtcp::write_sender_report(0xabc, &info, &[], &mut sr).unwrap();
    peer.send_to(&sr[..n], to).unwrap();
    let delivered = ep.poll_until("5 RTP and an SR", |st| {
        st.rx_packets == 5 && st.rx_rtcp == 1
    });
    assert_eq!(delivered, 5);
    for seq in 0..3u16 {
        let now = ep.now();
        assert!(ep.sock.send(
            &packet(0, seq, u32::from(seq) * 160, 0xdef, &payload),
            now,
            now
        ));
    }

    // The periodic path asks for a report; it is due once per interval.
    peer.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut sr_ntp = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sr_ntp.is_none() {
        assert!(Instant::now() < deadline, "no RTCP from the endpoint");
        ep.sock.poll_rtcp(ep.now());
        let Ok(n) = peer.recv(&mut buf) else {
            continue;
        };
        if !mediaproc_wire::roq::is_rtcp(&buf[..n]) {
            continue;
        }
        let pkts: Vec<_> = rtcp::parse_compound(&buf[..n])
            .map(|p| p.unwrap())
            .collect();
        let RtcpPacket::SenderReport(sr) = pkts[0] else {
            panic!("expected an SR first")
        };
        assert_eq!(
            (sr.ssrc, sr.info.packet_count, sr.info.octet_count),
            (0xdef, 3, 480)
        );
        let b = sr.reports.iter().next().unwrap();
        assert_eq!(
            (b.ssrc, b.highest_sequence, b.cumulative_lost, b.last_sr),
            (0xabc, 5, 1, 0x1234_5678)
        );
        assert!(matches!(pkts[1], RtcpPacket::SourceDescription(_)));
        sr_ntp = Some(sr.info.ntp_timestamp);
    }
    // Not again before the interval has passed.
    let now = ep.now();
    ep.sock.poll_rtcp(now);
    ep.sock.poll_rtcp(now);
    peer.set_nonblocking(true).unwrap();
    assert!(
        peer.recv(&mut buf).is_err(),
        "a second report within the interval"
    );

    let block = ReportBlock {
        ssrc: 0xdef,
        last_sr: rtcp::ntp_middle32(sr_ntp.unwrap()),
        ..ReportBlock::default()
    };
    let mut rr = [0u8; 64];
    let n = rtcp::write_receiver_report(0xabc, &[block], &mut rr).unwrap();
    peer.send_to(&rr[..n], to).unwrap();
    ep.poll_until("RTT from RTCP", |st| st.rtcp_rtt_us != 0);
    assert!(ep.stats().rtcp_rtt_us < 2_000_000);
    assert_eq!(ep.stats().rx_rtcp, 2);
}

/// A worker that stalls: datagrams wait in the kernel; what its queue cannot hold is counted (`SO_RXQ_OVFL`).
#[test]
fn a_full_kernel_queue_is_counted() {
    let cfg = RtpUdpConfig {
        // The kernel's minimum: a few dozen datagrams.
        recv_buffer: 1,
        ..pcmu_config()
    };
    let mut ep = Edge::bind(cfg);
    let to = ep.sock.local_addr();
    let peer = peer();
    let payload = [0xffu8; 160];
    const SENT: u16 = 2000;
    for seq in 0..SENT {
        peer.send_to(&packet(0, seq, u32::from(seq) * 160, 0xabc, &payload), to)
            .unwrap();
    }
    // One more after the overflow, so its control message carries the final count.
    ep.poll_until("the queue read", |st| st.rx_packets > 0);
    peer.send_to(&packet(0, SENT, u32::from(SENT) * 160, 0xabc, &payload), to)
        .unwrap();
    ep.poll_until("every datagram read or counted", |st| {
        st.rx_packets + st.rx_kernel_dropped == u64::from(SENT) + 1
    });
    let st = ep.stats();
    assert!(st.rx_kernel_dropped > 0, "{st:?}");
}
