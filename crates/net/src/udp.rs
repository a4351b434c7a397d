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
use mediaproc_wire::rtcp;
use mediaproc_wire::stats::ReceiveStats;
use mediaproc_wire::{RtpPacket, roq};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::error::NetError;
use crate::ring::{
    MAX_PACKET_LEN, PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::server::{TX_POLL_INTERVAL, TxWaker};
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
    loop {
        let drain = tokio::select! {
            r = sock.recv_from(&mut inbuf) => {
                if let Ok((n, from)) = r {
                    let pkt = &inbuf[..n];
                    if roq::is_rtcp(pkt) {
                        if rtcp::parse_compound(pkt).all(|p| p.is_ok()) {
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
            while let Some(meta) = tx.pop(&mut outbuf) {
                let len = meta.len.min(outbuf.len());
                match remote {
                    Some(to) if sock.try_send_to(&outbuf[..len], to).is_ok() => {
                        inc(&stats.tx_packets);
                        add(&stats.tx_bytes, len as u64);
                    }
                    _ => inc(&stats.tx_dropped),
                }
            }
        }
    }
}
