//! A plain RTP/UDP endpoint for one session: how third-party tools (GStreamer, ffmpeg, SIP gateways) exchange
//! audio with a session. RTP and RTCP share the port (RFC 5761); replies go to where valid packets come from
//! (symmetric RTP) unless a remote address is configured. Unencrypted: bind it to loopback or a trusted
//! network (proto/SPEC.md §7).

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mediaproc_wire::control::Codec;
use mediaproc_wire::rtcp::{self, ReportBlock, RtcpPacket};
use mediaproc_wire::stats::ReceiveStats;
use mediaproc_wire::{RtpPacket, roq};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::error::NetError;
use crate::ring::{
    MAX_PACKET_LEN, PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::server::{TX_POLL_INTERVAL, TxWaker, ntp_after, ntp_now_wallclock};
use crate::stats::{SessionStats, add, inc};

/// Configuration of an RTP/UDP endpoint.
#[derive(Debug, Clone)]
pub struct RtpUdpConfig {
    /// Local address (port 0 picks one).
    pub bind: SocketAddr,
    /// Fixed remote; `None` = symmetric RTP (send to the source of the last valid packet).
    pub remote: Option<SocketAddr>,
    /// Payload type of the audio (e.g. 96 for Opus, 0 PCMU, 8 PCMA).
    pub payload_type: u8,
    /// Codec of the audio (sets the RTP clock used for jitter: 48 kHz Opus, 8 kHz G.711).
    pub codec: Codec,
    /// Further payload types passed to the worker (e.g. 101 telephone-event); others are dropped and counted.
    pub extra_payload_types: Vec<u8>,
    /// Receive ring capacity.
    pub rx_ring_capacity: usize,
    /// Transmit ring capacity.
    pub tx_ring_capacity: usize,
    /// Fallback drain interval of the transmit ring.
    pub tx_poll_interval: Duration,
    /// Interval of the endpoint's RTCP reports (SR when it sends, RR when it receives), multiplexed on the RTP
    /// port (RFC 5761). `None` (the default) sends none: peers without RTCP multiplexing, such as a plain
    /// `udpsrc ! rtpjitterbuffer` GStreamer pipeline, would take them for RTP. Received RTCP is always used.
    pub rtcp_interval: Option<Duration>,
}

impl RtpUdpConfig {
    /// Opus on `payload_type`, symmetric RTP, default capacities.
    pub fn opus(bind: SocketAddr, payload_type: u8) -> Self {
        Self {
            bind,
            remote: None,
            payload_type,
            codec: Codec::Opus,
            extra_payload_types: Vec::new(),
            rx_ring_capacity: RX_RING_CAPACITY,
            tx_ring_capacity: TX_RING_CAPACITY,
            tx_poll_interval: TX_POLL_INTERVAL,
            rtcp_interval: None,
        }
    }
}

/// The worker-side handle of an RTP/UDP endpoint (flow id is always 0).
#[derive(Debug)]
pub struct UdpSession {
    /// RTP packets received.
    pub rx: PacketConsumer,
    /// RTP packets to send.
    pub tx: PacketProducer,
    /// Wakes the sender.
    pub waker: TxWaker,
    /// Live statistics.
    pub stats: Arc<SessionStats>,
}

/// A running RTP/UDP endpoint; dropping it stops its task.
#[derive(Debug)]
pub struct RtpUdpEndpoint {
    local: SocketAddr,
    origin: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RtpUdpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RtpUdpEndpoint {
    /// Binds the socket and starts the endpoint's task.
    pub async fn bind(config: RtpUdpConfig) -> Result<(Self, UdpSession), NetError> {
        let sock = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| NetError::Bind {
                addr: config.bind,
                source,
            })?;
        let local = sock.local_addr()?;
        let (rx_p, rx_c) = packet_ring(config.rx_ring_capacity);
        let (tx_p, tx_c) = packet_ring(config.tx_ring_capacity);
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(SessionStats::default());
        let origin = Instant::now();
        let task = tokio::spawn(run(
            sock,
            config,
            rx_p,
            tx_c,
            notify.clone(),
            stats.clone(),
            origin,
        ));
        Ok((
            Self {
                local,
                origin,
                task,
            },
            UdpSession {
                rx: rx_c,
                tx: tx_p,
                waker: TxWaker(notify),
                stats,
            },
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The instant that ring timestamps count from.
    pub fn clock_origin(&self) -> Instant {
        self.origin
    }
}

async fn run(
    sock: UdpSocket,
    config: RtpUdpConfig,
    mut rx: PacketProducer,
    mut tx: PacketConsumer,
    notify: Arc<Notify>,
    stats: Arc<SessionStats>,
    origin: Instant,
) {
    let clock: u64 = match config.codec {
        Codec::Pcmu | Codec::Pcma => 8_000,
        _ => 48_000,
    };
    let mut remote = config.remote;
    let mut recv_stats = ReceiveStats::default();
    let mut inbuf = vec![0u8; 2048].into_boxed_slice();
    let mut outbuf = vec![0u8; MAX_PACKET_LEN].into_boxed_slice();
    let mut tick = tokio::time::interval(config.tx_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut notified = pin!(notify.notified());
    notified.as_mut().enable();
    let ntp_origin = ntp_now_wallclock();
    let mut rtcp_state = RtcpState::default();
    let mut last_rtcp = Instant::now();
    loop {
        let drain = tokio::select! {
            r = sock.recv_from(&mut inbuf) => {
                if let Ok((n, from)) = r {
                    let pkt = &inbuf[..n];
                    if roq::is_rtcp(pkt) {
                        let now = origin.elapsed();
                        if rtcp_state.on_rtcp(pkt, now, ntp_after(ntp_origin, now), &stats) {
                            inc(&stats.rx_rtcp);
                        } else {
                            inc(&stats.rx_malformed);
                        }
                    } else {
                        match RtpPacket::parse(pkt) {
                            Err(_) => inc(&stats.rx_malformed),
                            Ok(p) if p.payload_type != config.payload_type
                                && !config.extra_payload_types.contains(&p.payload_type) => inc(&stats.rx_unexpected),
                            Ok(p) => {
                                let now = origin.elapsed().as_nanos() as u64;
                                let arrival = now.wrapping_mul(clock) / 1_000_000_000;
                                recv_stats.on_packet(p.sequence, p.timestamp, arrival as u32);
                                rtcp_state.remote_ssrc = p.ssrc;
                                stats.lost.store(recv_stats.lost().max(0) as u64, Ordering::Relaxed);
                                stats.jitter_us.store(u64::from(recv_stats.jitter()) * 1_000_000 / clock, Ordering::Relaxed);
                                inc(&stats.rx_packets);
                                add(&stats.rx_bytes, n as u64);
                                if rx.push(0, now, pkt).is_err() {
                                    inc(&stats.rx_unexpected);
                                }
                                if config.remote.is_none() {
                                    remote = Some(from);
                                }
                            }
                        }
                    }
                }
                false
            }
            () = notified.as_mut() => {
                notified.set(notify.notified());
                notified.as_mut().enable();
                true
            }
            _ = tick.tick() => true,
        };
        if drain {
            let now_ns = origin.elapsed().as_nanos() as u64;
            while let Some(meta) = tx.pop(&mut outbuf) {
                let len = meta.len.min(outbuf.len());
                match remote {
                    Some(to) if sock.try_send_to(&outbuf[..len], to).is_ok() => {
                        inc(&stats.tx_packets);
                        add(&stats.tx_bytes, len as u64);
                        if let Ok(p) = RtpPacket::parse(&outbuf[..len]) {
                            rtcp_state.on_sent(&p, now_ns);
                        }
                    }
                    _ => inc(&stats.tx_dropped),
                }
            }
            if config
                .rtcp_interval
                .is_some_and(|i| last_rtcp.elapsed() >= i)
            {
                last_rtcp = Instant::now();
                if let Some(to) = remote {
                    let now = origin.elapsed();
                    let mut pkt = [0u8; 256];
                    if let Some(n) = rtcp_state.report(
                        &mut recv_stats,
                        now,
                        ntp_after(ntp_origin, now),
                        clock,
                        &mut pkt,
                    ) {
                        let _ = sock.try_send_to(&pkt[..n], to);
                    }
                }
            }
        }
    }
}

/// RTCP bookkeeping of the endpoint (RFC 3550 §6.4): what we sent, the peer's last SR, RTT from its reports.
#[derive(Default)]
struct RtcpState {
    remote_ssrc: u32,
    last_sr: Option<(u32, u64)>,
    /// (ssrc, packets, octets, last RTP timestamp, when in ns since origin)
    sent: Option<(u32, u32, u32, u32, u64)>,
}

impl RtcpState {
    fn on_sent(&mut self, p: &RtpPacket<'_>, now_ns: u64) {
        let prev = self.sent.filter(|s| s.0 == p.ssrc);
        self.sent = Some((
            p.ssrc,
            prev.map_or(0, |s| s.1).wrapping_add(1),
            prev.map_or(0, |s| s.2).wrapping_add(p.payload.len() as u32),
            p.timestamp,
            now_ns,
        ));
    }

    /// Handles a received compound packet; false if it is malformed.
    fn on_rtcp(&mut self, pkt: &[u8], now: Duration, ntp: u64, stats: &SessionStats) -> bool {
        let now_mid = rtcp::ntp_middle32(ntp);
        let ours = self.sent.map(|s| s.0);
        let mut ok = true;
        for p in rtcp::parse_compound(pkt) {
            let blocks = match p {
                Ok(RtcpPacket::SenderReport(sr)) => {
                    self.last_sr = Some((
                        rtcp::ntp_middle32(sr.info.ntp_timestamp),
                        now.as_nanos() as u64,
                    ));
                    Some(sr.reports)
                }
                Ok(RtcpPacket::ReceiverReport(rr)) => Some(rr.reports),
                Ok(_) => None,
                Err(_) => {
                    ok = false;
                    None
                }
            };
            for b in blocks.iter().flat_map(|b| b.iter()) {
                if Some(b.ssrc) == ours {
                    if let Some(rtt) = rtcp::round_trip_time(&b, now_mid) {
                        let us = u64::from(rtt) * 1_000_000 / 65_536;
                        stats.rtcp_rtt_us.store(us.max(1), Ordering::Relaxed);
                    }
                }
            }
        }
        ok
    }

    /// Writes SR (if we sent) or RR (if we only received), each with a reception block when we received,
    /// plus SDES CNAME; `None` when there is nothing to report.
    fn report(
        &mut self,
        rx: &mut ReceiveStats,
        now: Duration,
        ntp: u64,
        clock: u64,
        buf: &mut [u8],
    ) -> Option<usize> {
        let now_ns = now.as_nanos() as u64;
        let block = (rx.received() > 0).then(|| {
            let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(mid, at)| {
                (
                    mid,
                    (now_ns.saturating_sub(at) * 65_536 / 1_000_000_000) as u32,
                )
            });
            rx.report_block(self.remote_ssrc, lsr, dlsr)
        });
        let blocks: &[ReportBlock] = match &block {
            Some(b) => std::slice::from_ref(b),
            None => &[],
        };
        let (ssrc, n) = match self.sent {
            Some((ssrc, packets, octets, ts, at)) => {
                let since = now_ns.saturating_sub(at) * clock / 1_000_000_000;
                let info = rtcp::SenderInfo {
                    ntp_timestamp: ntp,
                    rtp_timestamp: ts.wrapping_add(since as u32),
                    packet_count: packets,
                    octet_count: octets,
                };
                (
                    ssrc,
                    rtcp::write_sender_report(ssrc, &info, blocks, buf).ok()?,
                )
            }
            None if block.is_some() => {
                let ssrc = 0x4D50_0000 ^ self.remote_ssrc;
                (ssrc, rtcp::write_receiver_report(ssrc, blocks, buf).ok()?)
            }
            None => return None,
        };
        let m = rtcp::write_sdes_cname(ssrc, b"mediaproc", &mut buf[n..]).ok()?;
        Some(n + m)
    }
}
