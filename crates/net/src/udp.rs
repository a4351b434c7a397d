//! A plain RTP/UDP edge for one session: how third-party tools (GStreamer, ffmpeg, SIP gateways) exchange
//! audio with a session. RTP and RTCP share the port (RFC 5761). Unencrypted: bind it to loopback or a
//! trusted network (proto/SPEC.md §7); binding any other address logs a warning once.
//!
//! The edge runs on the media worker that owns the session, not on a network task: there is no ring and no
//! cross-thread wake-up per packet. It is split in two:
//!
//! * [`RtpUdpCore`] (here, sans-IO): everything the edge decides — strict RTP, the payload-type filter, RTCP
//!   (received reports used, SR/RR when due), and every counter in [`SessionStats`] — given datagrams, their
//!   arrival times and the current time.
//! * [`RtpUdpSocket`](crate::udp_socket::RtpUdpSocket) (`udp_socket`): the thin synchronous socket shell the
//!   worker calls at the session's tick — non-blocking `recvmsg` until the queue is empty, each datagram with
//!   its kernel receive timestamp, and `sendto` for each outgoing packet right after the tick.
//!
//! **Strict RTP** (the behaviour of Asterisk's `strictrtp` and rtpengine's strict source), see
//! [`SourceGuard`]: with a configured remote, packets from any other address are dropped and counted
//! (`rx_wrong_source`). In symmetric mode the first valid RTP packet's source is latched and replies go
//! there; another address takes over only after [`RtpUdpConfig::rebind_packets`] consecutive in-sequence
//! packets (same SSRC, sequence +1) from it — a NAT rebinding, counted in `source_changes` — so a stranger's
//! short burst neither enters the session nor redirects its audio.
//!
//! [`UdpSession`] is the ring-based handle the WebRTC edge hands its worker (a network task per peer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mediaproc_wire::control::Codec;
use mediaproc_wire::{RtpPacket, roq};

use crate::ring::{PacketConsumer, PacketProducer};
use crate::rtcp::StreamRtcp;
use crate::server::{TxWaker, ntp_after};
use crate::stats::{SessionStats, add, inc};

/// Default number of consecutive in-sequence packets from a new address before a symmetric-RTP session
/// follows it (Asterisk's `strictrtp` learning and rtpengine both use a handful).
pub const REBIND_PACKETS: u16 = 4;

/// Default kernel receive buffer of an RTP/UDP socket (`SO_RCVBUF`, as the QUIC socket's; the kernel caps it
/// at `net.core.rmem_max`): what arrives while the worker is busy or stalled waits there, not in a ring.
pub const RTP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Buffer for one RTCP report of the edge (SR or RR with one report block, and SDES).
pub const RTCP_REPORT_BUFFER: usize = 256;

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
    /// Kernel receive buffer (`SO_RCVBUF`, best effort), see [`RTP_RECV_BUFFER`].
    pub recv_buffer: usize,
    /// Interval of the endpoint's RTCP reports (SR when it sends, RR when it receives), multiplexed on the RTP
    /// port (RFC 5761). `None` (the default) sends none: peers without RTCP multiplexing, such as a plain
    /// `udpsrc ! rtpjitterbuffer` GStreamer pipeline, would take them for RTP. Received RTCP is always used.
    /// Reports go out when the owner polls for them ([`RtpUdpCore::poll_report`]; the daemon's worker does
    /// from its once-a-second path, so shorter intervals act as a second there).
    pub rtcp_interval: Option<Duration>,
    /// Symmetric mode: consecutive in-sequence packets (same SSRC, sequence +1) from a new address before the
    /// session moves there (NAT rebinding). Default [`REBIND_PACKETS`]; at least 1.
    pub rebind_packets: u16,
}

impl RtpUdpConfig {
    /// Opus on `payload_type`, symmetric RTP, default buffer.
    pub fn opus(bind: SocketAddr, payload_type: u8) -> Self {
        Self {
            bind,
            remote: None,
            source: None,
            payload_type,
            codec: Codec::Opus,
            extra_payload_types: Vec::new(),
            recv_buffer: RTP_RECV_BUFFER,
            rtcp_interval: None,
            rebind_packets: REBIND_PACKETS,
        }
    }
}

/// The worker-side handle of a packet edge run by a network task (the WebRTC peer; flow id is always 0).
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

/// The sans-IO core of an RTP/UDP edge (see the module docs): decides about each received datagram and each
/// sent packet, counts them, and says when an RTCP report is due. Times are the caller's monotonic clock.
#[derive(Debug)]
pub struct RtpUdpCore {
    payload_type: u8,
    extra_payload_types: Vec<u8>,
    guard: SourceGuard,
    rtcp: StreamRtcp,
    rtcp_interval: Option<Duration>,
    next_rtcp: Duration,
    /// The wall clock (NTP) at `ntp_origin.0` on the caller's clock: RTCP's NTP timestamps.
    ntp_origin: (Duration, u64),
    stats: Arc<SessionStats>,
}

impl RtpUdpCore {
    /// A core for `config`, created at `now` when the wall clock read `ntp_now` (a 64-bit NTP timestamp).
    pub fn new(config: &RtpUdpConfig, now: Duration, ntp_now: u64) -> Self {
        let clock: u64 = match config.codec {
            Codec::Pcmu | Codec::Pcma => 8_000,
            _ => 48_000,
        };
        Self {
            payload_type: config.payload_type,
            extra_payload_types: config.extra_payload_types.clone(),
            guard: SourceGuard::new(config.remote, config.source, config.rebind_packets),
            rtcp: StreamRtcp::new(clock),
            rtcp_interval: config.rtcp_interval,
            next_rtcp: now + config.rtcp_interval.unwrap_or_default(),
            ntp_origin: (now, ntp_now),
            stats: Arc::new(SessionStats::default()),
        }
    }

    /// Live statistics.
    pub fn stats(&self) -> &Arc<SessionStats> {
        &self.stats
    }

    /// Where the session sends: the fixed remote, or the latched source (`None` before the first packet).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.guard.remote()
    }

    fn ntp_at(&self, now: Duration) -> u64 {
        ntp_after(self.ntp_origin.1, now.saturating_sub(self.ntp_origin.0))
    }

    /// Handles one received datagram that arrived at `arrival`: strict source check, RTCP (used and counted)
    /// or RTP (payload-type filter, receive statistics). Returns true when it is RTP for the session's worker;
    /// everything else is counted here and needs nothing more.
    pub fn on_datagram(&mut self, pkt: &[u8], from: SocketAddr, arrival: Duration) -> bool {
        // A fixed remote is checked before parsing: nothing from elsewhere is even looked at.
        if self.guard.fixed.is_some() && !self.guard.check_other(from) {
            inc(&self.stats.rx_wrong_source);
            return false;
        }
        let arrival_ns = arrival.as_nanos() as u64;
        if roq::is_rtcp(pkt) {
            if !self.guard.check_other(from) {
                inc(&self.stats.rx_wrong_source);
                return false;
            }
            let input = self.rtcp.on_rtcp(pkt, arrival_ns, self.ntp_at(arrival));
            self.stats.record_rtcp(&input);
            if input.ok {
                inc(&self.stats.rx_rtcp);
            } else {
                inc(&self.stats.rx_malformed);
            }
            return false;
        }
        let Ok(p) = RtpPacket::parse(pkt) else {
            inc(&self.stats.rx_malformed);
            return false;
        };
        if p.payload_type != self.payload_type
            && !self.extra_payload_types.contains(&p.payload_type)
        {
            inc(&self.stats.rx_unexpected);
            return false;
        }
        match self.guard.check(from, p.ssrc, p.sequence) {
            SourceVerdict::Drop => {
                inc(&self.stats.rx_wrong_source);
                return false;
            }
            SourceVerdict::Moved => {
                inc(&self.stats.source_changes);
                // Rare (each move needs a run of in-sequence packets), so a log line is affordable here.
                tracing::info!(%from, "RTP/UDP source moved to a new address (NAT rebinding)");
            }
            SourceVerdict::Accept => {}
        }
        self.rtcp.on_received(&p, arrival_ns, &self.stats);
        inc(&self.stats.rx_packets);
        add(&self.stats.rx_bytes, pkt.len() as u64);
        true
    }

    /// Counts a datagram that did not fit the receive buffer (truncated by the kernel): malformed.
    pub fn on_truncated(&self) {
        inc(&self.stats.rx_malformed);
    }

    /// Records the kernel's cumulative count of datagrams dropped from the socket's full receive queue.
    pub fn on_kernel_dropped(&self, total: u64) {
        self.stats
            .rx_kernel_dropped
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a packet handed to the socket at `now` that the worker queued at `queued`.
    pub fn on_sent(&mut self, pkt: &[u8], queued: Duration, now: Duration) {
        self.stats
            .record_tx_wait((queued.as_nanos() as u64).max(1), now.as_nanos() as u64);
        inc(&self.stats.tx_packets);
        add(&self.stats.tx_bytes, pkt.len() as u64);
        if let Ok(p) = RtpPacket::parse(pkt) {
            self.rtcp.on_sent(&p, now.as_nanos() as u64);
        }
    }

    /// Counts a packet that could not be sent (no remote yet, socket buffer full, send error): a drop.
    pub fn on_send_failed(&self) {
        inc(&self.stats.tx_dropped);
    }

    /// When configured and due at `now`, writes the next RTCP report (SR when we send, RR with our receive
    /// statistics, and SDES) into `out`; returns its length and where it goes. A report that is due while no
    /// remote is known is skipped.
    pub fn poll_report(&mut self, now: Duration, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let interval = self.rtcp_interval?;
        if now < self.next_rtcp {
            return None;
        }
        self.next_rtcp = now + interval;
        let to = self.guard.remote()?;
        let rr_ssrc = 0x4D50_0000 ^ self.rtcp.remote_ssrc();
        let n = self
            .rtcp
            .write_report(now.as_nanos() as u64, self.ntp_at(now), rr_ssrc, out)?;
        Some((n, to))
    }
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
