//! Statistics per session and per connection: plain atomic counters (relaxed increments on the packet path,
//! no locks), read as snapshots. Every packet, connection or message the shell drops is counted in one of
//! these fields (and the daemon exports them to `/metrics`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::{LatenessHistogram, LocalHistogram};
use crate::ring::RingProbe;

/// Live counters of one media session (QUIC) or one packet edge (RTP/UDP, WebRTC).
#[derive(Debug, Default)]
pub struct SessionStats {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) rx_rtcp: AtomicU64,
    pub(crate) rx_malformed: AtomicU64,
    pub(crate) rx_unexpected: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) jitter_us: AtomicU64,
    pub(crate) rtt_us: AtomicU64,
    pub(crate) rtcp_rtt_us: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) rx_wrong_source: AtomicU64,
    pub(crate) source_changes: AtomicU64,
    /// RTP/UDP: datagrams the kernel dropped from the socket's full receive queue (`SO_RXQ_OVFL`).
    pub(crate) rx_kernel_dropped: AtomicU64,
    /// RTCP reports the peer sent about our stream, and the fraction lost of the last one.
    pub(crate) remote_reports: AtomicU64,
    pub(crate) remote_fraction_lost: AtomicU64,
    /// The session's receive ring (network → worker), for its overflow count.
    pub(crate) rx_ring: OnceLock<RingProbe>,
    /// The session's transmit ring (worker → network), for its overflow count.
    pub(crate) tx_ring: OnceLock<RingProbe>,
    /// A packet's enqueue by the worker (its `time_ns`, right after the bot's frame was taken and encoded) → the
    /// packet handed to the socket or the QUIC connection. Packets queued with `time_ns` 0 are not counted.
    pub(crate) tx_wait: LatenessHistogram,
}

/// A snapshot of [`SessionStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStatsSnapshot {
    /// RTP packets received and handed to the receive ring.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// RTCP packets received.
    pub rx_rtcp: u64,
    /// Datagrams of this session that did not parse (dropped).
    pub rx_malformed: u64,
    /// Well-formed packets not expected here (wrong payload type, reserved flow kinds), dropped.
    pub rx_unexpected: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the worker queued that could not be sent (no remote yet, too large, connection gone).
    pub tx_dropped: u64,
    /// Cumulative RTP packets lost, summed over the session's receive flows (RFC 3550 A.3).
    pub lost: u64,
    /// Interarrival jitter of the most recent receive flow, in microseconds (RFC 3550 A.8).
    pub jitter_us: u64,
    /// Round-trip time in microseconds: the QUIC connection's estimate (0 on the RTP/UDP endpoint).
    pub rtt_us: u64,
    /// Round-trip time in microseconds from RTCP (the edge's reports on our SRs); 0 until measured.
    pub rtcp_rtt_us: u64,
    /// Control events the session's consumer did not take in time (its event queue was full).
    pub events_dropped: u64,
    /// Received packets lost to receive-ring overflow (the worker did not keep up; oldest dropped).
    pub rx_ring_dropped: u64,
    /// Packets to send lost to transmit-ring overflow (the network side did not keep up; oldest dropped).
    pub tx_ring_dropped: u64,
    /// RTP/UDP: packets dropped because they came from an address other than the session's remote (strict
    /// RTP: a fixed remote, or the latched source in symmetric mode). Always 0 on QUIC.
    pub rx_wrong_source: u64,
    /// RTP/UDP symmetric mode: times the latched source moved to a new address (NAT rebinding, after enough
    /// consecutive in-sequence packets from it).
    pub source_changes: u64,
    /// RTP/UDP: datagrams the kernel dropped because the socket's receive queue was full (the worker did not
    /// read it in time; `SO_RXQ_OVFL`). Always 0 on QUIC and WebRTC.
    pub rx_kernel_dropped: u64,
    /// RTCP report blocks the peer sent about our stream (receiver reports or sender reports).
    pub remote_reports: u64,
    /// The fraction of our packets the peer reported lost in its last report block (RFC 3550 §6.4.1: the
    /// loss since its previous report, in 1/256); 0 before any report. Drives the encoder's adaptive FEC.
    pub remote_fraction_lost: u8,
}

impl SessionStats {
    /// Records what an RTCP compound told about our stream (round trip, the peer's loss report).
    pub(crate) fn record_rtcp(&self, input: &crate::rtcp::RtcpInput) {
        if let Some(rtt) = input.rtt_us {
            self.rtcp_rtt_us.store(rtt, Relaxed);
        }
        if let Some(fraction) = input.fraction_lost {
            self.remote_fraction_lost
                .store(u64::from(fraction), Relaxed);
            self.remote_reports.fetch_add(1, Relaxed);
        }
    }

    /// Counts how long a packet queued at `queued_ns` waited for the send at `now_ns` (same clock).
    pub(crate) fn record_tx_wait(&self, queued_ns: u64, now_ns: u64) {
        if queued_ns != 0 {
            self.tx_wait
                .record(now_ns.saturating_sub(queued_ns) / 1_000);
        }
    }

    /// The transmit hand-off so far: a packet's enqueue by the worker → handed to the socket (µs).
    pub fn tx_wait(&self) -> LocalHistogram {
        self.tx_wait.snapshot()
    }

    /// Counters that also report the overflow of these rings.
    pub(crate) fn with_rings(rx: RingProbe, tx: RingProbe) -> Self {
        let s = Self::default();
        let _ = s.rx_ring.set(rx);
        let _ = s.tx_ring.set(tx);
        s
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> SessionStatsSnapshot {
        SessionStatsSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_rtcp: self.rx_rtcp.load(Relaxed),
            rx_malformed: self.rx_malformed.load(Relaxed),
            rx_unexpected: self.rx_unexpected.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_dropped: self.tx_dropped.load(Relaxed),
            lost: self.lost.load(Relaxed),
            jitter_us: self.jitter_us.load(Relaxed),
            rtt_us: self.rtt_us.load(Relaxed),
            rtcp_rtt_us: self.rtcp_rtt_us.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            rx_ring_dropped: self.rx_ring.get().map_or(0, RingProbe::dropped),
            tx_ring_dropped: self.tx_ring.get().map_or(0, RingProbe::dropped),
            rx_wrong_source: self.rx_wrong_source.load(Relaxed),
            source_changes: self.source_changes.load(Relaxed),
            rx_kernel_dropped: self.rx_kernel_dropped.load(Relaxed),
            remote_reports: self.remote_reports.load(Relaxed),
            remote_fraction_lost: self.remote_fraction_lost.load(Relaxed).min(255) as u8,
        }
    }
}

/// Live counters of the QUIC endpoint, summed over its connections.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) datagrams_rx: AtomicU64,
    pub(crate) datagrams_tx: AtomicU64,
    pub(crate) bytes_rx: AtomicU64,
    pub(crate) bytes_tx: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) unknown_flow: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_refused_per_address: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) closed_attach_deadline: AtomicU64,
    pub(crate) closed_refused_attaches: AtomicU64,
    pub(crate) closed_control_stalled: AtomicU64,
}

/// A snapshot of [`EndpointStats`] (or of one connection's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStatsSnapshot {
    /// Connections accepted (endpoint totals only).
    pub connections: u64,
    /// Connections open now (endpoint totals only).
    pub connections_open: u64,
    /// Datagrams received.
    pub datagrams_rx: u64,
    /// Datagrams sent.
    pub datagrams_tx: u64,
    /// Datagram bytes received.
    pub bytes_rx: u64,
    /// Datagram bytes sent.
    pub bytes_tx: u64,
    /// Datagrams dropped because they did not parse (bad flow id varint, bad RTP/RTCP).
    pub malformed: u64,
    /// Datagrams dropped because their flow id was not declared.
    pub unknown_flow: u64,
    /// Attach attempts refused (unknown session or wrong token).
    pub refused: u64,
    /// Control-stream protocol errors (malformed, unknown or misdirected messages).
    pub protocol_errors: u64,
    /// Connection attempts refused before the handshake because a connection cap was reached (global or
    /// per source address; endpoint totals only).
    pub connections_refused: u64,
    /// The part of `connections_refused` due to the per-source-address cap (endpoint totals only).
    pub connections_refused_per_address: u64,
    /// Stateless Retry packets sent because handshakes came faster than the configured rate (endpoint
    /// totals only).
    pub retries: u64,
    /// Handshakes that did not complete (endpoint totals only).
    pub handshakes_failed: u64,
    /// Connections closed because no session was attached within the attach deadline (squatters).
    pub closed_attach_deadline: u64,
    /// Connections closed after too many refused attaches.
    pub closed_refused_attaches: u64,
    /// Connections closed because the peer stopped reading its control stream (send queue full or a write
    /// exceeded the write timeout); their sessions were released.
    pub closed_control_stalled: u64,
}

impl EndpointStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> ConnectionStatsSnapshot {
        ConnectionStatsSnapshot {
            connections: self.connections.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            datagrams_rx: self.datagrams_rx.load(Relaxed),
            datagrams_tx: self.datagrams_tx.load(Relaxed),
            bytes_rx: self.bytes_rx.load(Relaxed),
            bytes_tx: self.bytes_tx.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            unknown_flow: self.unknown_flow.load(Relaxed),
            refused: self.refused.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_refused_per_address: self.connections_refused_per_address.load(Relaxed),
            retries: self.retries.load(Relaxed),
            handshakes_failed: self.handshakes_failed.load(Relaxed),
            closed_attach_deadline: self.closed_attach_deadline.load(Relaxed),
            closed_refused_attaches: self.closed_refused_attaches.load(Relaxed),
            closed_control_stalled: self.closed_control_stalled.load(Relaxed),
        }
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}
