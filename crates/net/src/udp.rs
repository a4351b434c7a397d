//! A plain RTP/UDP endpoint for one session: how third-party tools (GStreamer, ffmpeg, SIP gateways) exchange
//! audio with a session. RTP and RTCP share the port (RFC 5761). Unencrypted: bind it to loopback or a
//! trusted network (proto/SPEC.md §7); binding any other address logs a warning once.
//!
//! **Strict RTP** (the behaviour of Asterisk's `strictrtp` and rtpengine's strict source), see
//! [`SourceGuard`]: with a configured remote, packets from any other address are dropped and counted
//! (`rx_wrong_source`). In symmetric mode the first valid RTP packet's source is latched and replies go
//! there; another address takes over only after [`RtpUdpConfig::rebind_packets`] consecutive in-sequence
//! packets (same SSRC, sequence +1) from it — a NAT rebinding, counted in `source_changes` — so a stranger's
//! short burst neither enters the session nor redirects its audio.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediaproc_wire::control::Codec;
use mediaproc_wire::{RtpPacket, roq};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::error::NetError;
use crate::ring::{
    MAX_PACKET_LEN, PacketConsumer, PacketProducer, RX_RING_CAPACITY, TX_RING_CAPACITY, packet_ring,
};
use crate::rtcp::StreamRtcp;
use crate::server::{TX_POLL_INTERVAL, TxWaker, ntp_after, ntp_now_wallclock};
use crate::stats::{SessionStats, add, inc};

/// Default number of consecutive in-sequence packets from a new address before a symmetric-RTP session
/// follows it (Asterisk's `strictrtp` learning and rtpengine both use a handful).
pub const REBIND_PACKETS: u16 = 4;

/// Configuration of an RTP/UDP endpoint.
#[derive(Debug, Clone)]
pub struct RtpUdpConfig {
    /// Local address (port 0 picks one).
    pub bind: SocketAddr,
    /// Fixed remote; `None` = symmetric RTP (send to the latched source, see [`SourceGuard`]).
    pub remote: Option<SocketAddr>,
    /// With a fixed `remote`: the one address RTP/RTCP is taken from, when the peer sends from another
    /// socket than it receives on (two separate pipelines); `None` = the remote itself. Ignored in symmetric
    /// mode.
    pub source: Option<SocketAddr>,
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
    /// Symmetric mode: consecutive in-sequence packets (same SSRC, sequence +1) from a new address before the
    /// session moves there (NAT rebinding). Default [`REBIND_PACKETS`]; at least 1.
    pub rebind_packets: u16,
}

impl RtpUdpConfig {
    /// Opus on `payload_type`, symmetric RTP, default capacities.
    pub fn opus(bind: SocketAddr, payload_type: u8) -> Self {
        Self {
            bind,
            remote: None,
            source: None,
            payload_type,
            codec: Codec::Opus,
            extra_payload_types: Vec::new(),
            rx_ring_capacity: RX_RING_CAPACITY,
            tx_ring_capacity: TX_RING_CAPACITY,
            tx_poll_interval: TX_POLL_INTERVAL,
            rtcp_interval: None,
            rebind_packets: REBIND_PACKETS,
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
        if !local.ip().is_loopback() {
            warn_unencrypted_once(local);
        }
        let (rx_p, rx_c) = packet_ring(config.rx_ring_capacity);
        let (tx_p, tx_c) = packet_ring(config.tx_ring_capacity);
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(SessionStats::with_rings(rx_c.probe(), tx_c.probe()));
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
                waker: TxWaker::single(notify),
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

fn warn_unencrypted_once(local: SocketAddr) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            %local,
            "RTP/UDP endpoint bound to a non-loopback address: its media is unencrypted and unauthenticated \
             (strict RTP drops strangers' packets, but anyone on the path can read and spoof); prefer QUIC \
             or a trusted network"
        );
    });
}

/// What [`SourceGuard::check`] decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// From the session's source: take it.
    Accept,
    /// From the new address that just completed the rebinding run: take it; the session now sends there.
    Moved,
    /// From another address: drop and count.
    Drop,
}

/// Strict-RTP source filter (sans-IO): which packets a session takes, and where it sends.
#[derive(Debug, Clone)]
pub struct SourceGuard {
    /// `Some`: a fixed remote; only this address is accepted.
    fixed: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    rebind_packets: u16,
    /// A new address trying to take over: (address, SSRC, last sequence, consecutive in-sequence count).
    candidate: Option<(SocketAddr, u32, u16, u16)>,
}

impl SourceGuard {
    /// A guard for a fixed `remote` (`Some`; packets accepted from `source`, or the remote when `None`) or
    /// symmetric RTP (`None`) that follows a new source after `rebind_packets` consecutive in-sequence
    /// packets.
    pub fn new(
        remote: Option<SocketAddr>,
        source: Option<SocketAddr>,
        rebind_packets: u16,
    ) -> Self {
        Self {
            fixed: remote.map(|r| source.unwrap_or(r)),
            remote,
            rebind_packets: rebind_packets.max(1),
            candidate: None,
        }
    }

    /// Where the session sends: the fixed remote, or the latched source.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Whether a packet that is not RTP (RTCP) from `from` is taken: only from the session's source.
    pub fn check_other(&self, from: SocketAddr) -> bool {
        self.fixed.or(self.remote) == Some(from)
    }

    /// Decides about a valid RTP packet (`ssrc`, `seq`) from `from`.
    pub fn check(&mut self, from: SocketAddr, ssrc: u32, seq: u16) -> SourceVerdict {
        if let Some(f) = self.fixed {
            return if f == from {
                SourceVerdict::Accept
            } else {
                SourceVerdict::Drop
            };
        }
        match self.remote {
            Some(r) if r == from => return SourceVerdict::Accept,
            None => {
                self.remote = Some(from);
                return SourceVerdict::Accept;
            }
            Some(_) => {}
        }
        let run = match self.candidate {
            Some((addr, s, last, n))
                if addr == from && s == ssrc && seq == last.wrapping_add(1) =>
            {
                n.saturating_add(1)
            }
            _ => 1,
        };
        if run >= self.rebind_packets {
            self.remote = Some(from);
            self.candidate = None;
            SourceVerdict::Moved
        } else {
            self.candidate = Some((from, ssrc, seq, run));
            SourceVerdict::Drop
        }
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
    let mut guard = SourceGuard::new(config.remote, config.source, config.rebind_packets);
    let mut inbuf = vec![0u8; 2048].into_boxed_slice();
    let mut outbuf = vec![0u8; MAX_PACKET_LEN].into_boxed_slice();
    let mut tick = tokio::time::interval(config.tx_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut notified = pin!(notify.notified());
    notified.as_mut().enable();
    let ntp_origin = ntp_now_wallclock();
    let mut rtcp_state = StreamRtcp::new(clock);
    let mut last_rtcp = Instant::now();
    // Sends use `try_send_to`, which needs the reactor to have seen the socket writable once.
    let _ = sock.writable().await;
    loop {
        let drain = tokio::select! {
            r = sock.recv_from(&mut inbuf) => {
                if let Ok((n, from)) = r {
                    on_packet(&inbuf[..n], from, &config, &mut guard, &mut rtcp_state, &mut rx, &stats, origin, ntp_origin);
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
                match guard.remote() {
                    Some(to) if sock.try_send_to(&outbuf[..len], to).is_ok() => {
                        stats.record_tx_wait(meta.time_ns, now_ns);
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
                if let Some(to) = guard.remote() {
                    let now = origin.elapsed();
                    let mut pkt = [0u8; 256];
                    let rr_ssrc = 0x4D50_0000 ^ rtcp_state.remote_ssrc();
                    if let Some(n) = rtcp_state.write_report(
                        now.as_nanos() as u64,
                        ntp_after(ntp_origin, now),
                        rr_ssrc,
                        &mut pkt,
                    ) {
                        let _ = sock.try_send_to(&pkt[..n], to);
                    }
                }
            }
        }
    }
}

/// Handles one received datagram: strict source check, RTCP or RTP, into the receive ring.
#[allow(clippy::too_many_arguments)]
fn on_packet(
    pkt: &[u8],
    from: SocketAddr,
    config: &RtpUdpConfig,
    guard: &mut SourceGuard,
    rtcp_state: &mut StreamRtcp,
    rx: &mut PacketProducer,
    stats: &SessionStats,
    origin: Instant,
    ntp_origin: u64,
) {
    // A fixed remote is checked before parsing: nothing from elsewhere is even looked at.
    if guard.fixed.is_some() && !guard.check_other(from) {
        inc(&stats.rx_wrong_source);
        return;
    }
    if roq::is_rtcp(pkt) {
        if !guard.check_other(from) {
            inc(&stats.rx_wrong_source);
            return;
        }
        let now = origin.elapsed();
        let input = rtcp_state.on_rtcp(pkt, now.as_nanos() as u64, ntp_after(ntp_origin, now));
        stats.record_rtcp(&input);
        if input.ok {
            inc(&stats.rx_rtcp);
        } else {
            inc(&stats.rx_malformed);
        }
        return;
    }
    let p = match RtpPacket::parse(pkt) {
        Err(_) => {
            inc(&stats.rx_malformed);
            return;
        }
        Ok(p) => p,
    };
    if p.payload_type != config.payload_type
        && !config.extra_payload_types.contains(&p.payload_type)
    {
        inc(&stats.rx_unexpected);
        return;
    }
    match guard.check(from, p.ssrc, p.sequence) {
        SourceVerdict::Drop => {
            inc(&stats.rx_wrong_source);
            return;
        }
        SourceVerdict::Moved => {
            inc(&stats.source_changes);
            // Rare (each move needs a run of in-sequence packets), so a log line is affordable here.
            tracing::info!(%from, "RTP/UDP source moved to a new address (NAT rebinding)");
        }
        SourceVerdict::Accept => {}
    }
    let now = origin.elapsed().as_nanos() as u64;
    rtcp_state.on_received(&p, now, stats);
    inc(&stats.rx_packets);
    add(&stats.rx_bytes, pkt.len() as u64);
    if rx.push(0, now, pkt).is_err() {
        inc(&stats.rx_unexpected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn fixed_remote_takes_nothing_from_elsewhere() {
        let mut g = SourceGuard::new(Some(addr(1)), None, 4);
        assert_eq!(g.check(addr(1), 5, 1), SourceVerdict::Accept);
        for seq in 2..100 {
            assert_eq!(g.check(addr(2), 5, seq), SourceVerdict::Drop);
        }
        assert_eq!(g.remote(), Some(addr(1)));
        assert!(!g.check_other(addr(2)));
    }

    #[test]
    fn symmetric_latches_first_and_moves_after_a_run() {
        let mut g = SourceGuard::new(None, None, 4);
        assert_eq!(g.remote(), None);
        assert_eq!(g.check(addr(1), 5, 10), SourceVerdict::Accept);
        assert_eq!(g.remote(), Some(addr(1)));
        // A 3-packet in-sequence burst from a stranger does not redirect.
        for seq in 100..103 {
            assert_eq!(g.check(addr(2), 9, seq), SourceVerdict::Drop);
        }
        assert_eq!(g.remote(), Some(addr(1)));
        // Out-of-sequence or SSRC-changing packets restart the run.
        assert_eq!(g.check(addr(2), 9, 200), SourceVerdict::Drop);
        assert_eq!(g.check(addr(2), 8, 201), SourceVerdict::Drop);
        assert_eq!(g.check(addr(2), 8, 202), SourceVerdict::Drop);
        assert_eq!(g.check(addr(2), 8, 203), SourceVerdict::Drop);
        // The 4th consecutive (same SSRC, seq + 1, across the wrap too) moves the session.
        let mut g2 = g.clone();
        assert_eq!(g.check(addr(2), 8, 204), SourceVerdict::Moved);
        assert_eq!(g.remote(), Some(addr(2)));
        assert_eq!(g.check(addr(2), 8, 205), SourceVerdict::Accept);
        assert_eq!(g.check(addr(1), 5, 11), SourceVerdict::Drop);
        // Wrap of the sequence number is in sequence.
        for seq in [65_534u16, 65_535, 0] {
            assert_eq!(g2.check(addr(3), 1, seq), SourceVerdict::Drop);
        }
        assert_eq!(g2.check(addr(3), 1, 1), SourceVerdict::Moved);
    }
}
