//! # mediaproc-net — the async network shell
//!
//! Moves RTP between the network and media sessions' packet rings; everything protocol-shaped lives in
//! the sans-IO `mediaproc-wire` crate, and everything media-shaped (jitter buffer, codec) in the session
//! workers that consume the rings. This crate contains:
//!
//! * [`MediaServer`] — the QUIC endpoint at `quic://host:port/MediaProcessor` (TLS 1.3, ALPN `mproq/1`,
//!   certificate files or a generated self-signed certificate whose SHA-256 fingerprint it reports). Edges
//!   attach to sessions with the session's token; unknown sessions and wrong tokens get the same
//!   `ATTACH_REFUSED` and are counted. RTP flows as QUIC datagrams (`flow id varint | RTP`), see
//!   `proto/SPEC.md`.
//!   The endpoint defends itself (see `server` and proto/SPEC.md §2.3.1): connection caps in all and per
//!   source address (refused before the handshake), stateless Retry above a handshake rate, an attach
//!   deadline for connections that never attach, a close after a few refused attaches, rate-limited logs,
//!   and a per-connection control writer with a bounded queue and a write timeout, so a peer that stops
//!   reading is closed and its sessions released without ever blocking a datagram path.
//! * [`EdgeConnection`] — the edge side, for the call emulator and tests.
//! * [`RtpUdpSocket`] — a plain RTP/UDP port per session for third-party tools (symmetric RTP or a
//!   configured remote), Opus or G.711, with strict RTP ([`SourceGuard`]): strangers' packets are dropped
//!   and counted, and a symmetric session follows a new address only after a run of in-sequence packets.
//!   Unlike the other edges it has no task: the media worker that owns the session reads the socket at the
//!   session's tick (kernel receive timestamps give the true arrival times) and sends right after it; the
//!   sans-IO [`RtpUdpCore`] decides and counts, the socket shell only moves datagrams (`udp`, `udp_socket`).
//! * [`WebRtcPeer`] — the WebRTC edge (WHIP signalling in the daemon): str0m, driven sans-IO by one task per
//!   peer, ICE-lite host candidates, DTLS-SRTP, Opus; it hands the worker a pair of packet rings ([`UdpSession`]).
//! * [`rtcp`] — the sans-IO RTCP bookkeeping both edges share (reports, RTT, overflow-free arithmetic).
//! * [`ring`] — the bounded lock-free packet rings that connect the shell to session workers: the network
//!   side never blocks, and on overflow the **oldest** packet is dropped and counted.
//! * [`stats`] — per-session and per-endpoint counters (packets, bytes, loss, jitter, RTT, malformed,
//!   refused, ring overflow, strict-RTP drops, closed squatters and stalled peers, caps, retries): every drop
//!   the shell makes is in one of them.
//!
//! ## How a session worker uses it
//! `MediaServer::add_session(SessionSpec{id, token, contexts})` returns a [`QuicSession`]: `rx` (packets from
//! the edge, tagged with their flow id and arrival time), `tx` (push RTP tagged with a source flow id),
//! `waker` (call once per tick after pushing; it wakes only the connection the session is attached to),
//! `events` (attach/detach, flows, roster, dominant speaker, DTMF, send status) and `stats`. A WebRTC peer hands
//! the worker the same kind of ring handles ([`UdpSession`]). The worker owns its ring ends; no lock is shared
//! with the network tasks. An RTP/UDP session's worker owns its [`RtpUdpSocket`] outright: it calls
//! [`RtpUdpSocket::recv`] at the session's tick, [`RtpUdpSocket::send`] for each packet the tick produced, and
//! [`RtpUdpSocket::poll_rtcp`] from its periodic path.
//!
//! ## Hot path
//! One tokio task per QUIC connection (or per WebRTC peer) owns the connection's flow table and the
//! network ends of its sessions' rings. Receiving a datagram: parse in place, look the flow id up, update
//! RTP statistics, copy into the ring — no allocation (quinn hands datagrams over as `Bytes` it allocated),
//! no lock, no logging. Sending: on the connection's own wake-up or every [`TX_POLL_INTERVAL`], drain the
//! transmit rings of the connection's sessions and hand the datagrams to quinn in one burst (quinn coalesces
//! them into shared QUIC packets); datagram buffers are carved from a per-connection arena.

pub mod edge;
pub mod error;
pub mod histogram;
pub mod ring;
pub mod rtcp;
pub mod rxtime;
pub mod server;
pub mod stats;
pub mod tls;
pub mod udp;
pub mod udp_socket;
pub mod webrtc;

pub use edge::{EdgeConfig, EdgeConnection, parse_mp_uri};
pub use error::NetError;
pub use ring::{PacketConsumer, PacketMeta, PacketProducer, packet_ring};
pub use server::{
    ConnectionInfo, MediaServer, QuicSession, ServerConfig, SessionEvent, SessionSpec,
    TX_POLL_INTERVAL, TxWaker, generate_token,
};
pub use stats::{ConnectionStatsSnapshot, EndpointStats, SessionStats, SessionStatsSnapshot};
pub use tls::{ServerTrust, TlsSource, fingerprint_hex, parse_fingerprint, quic_client_config};
pub use udp::{RtpUdpConfig, RtpUdpCore, SourceGuard, SourceVerdict, UdpSession};
pub use udp_socket::{RtpUdpSocket, RxEvent};
pub use webrtc::{AcceptedPeer, PeerEvent, PeerInfo, PeerState, WebRtcConfig, WebRtcPeer};
