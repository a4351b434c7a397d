//! # mediaproc-wire — sans-IO wire formats
//!
//! Everything `mediaproc` puts on or takes off the network, as pure functions over byte slices:
//!
//! * [`rtp`] — RTP packets (RFC 3550) with RFC 8285 one-/two-byte header extensions, RFC 6464 audio level,
//!   RFC 4733 telephone events;
//! * [`rtcp`] — compound RTCP: SR, RR, SDES, BYE (others carried opaquely), RTT from report blocks;
//! * [`roq`] — RTP-over-QUIC datagram framing (QUIC varint flow id + one packet) and RFC 5761 demux;
//! * [`control`] — the control-stream messages of the mediaproc protocol (see `proto/SPEC.md`);
//! * [`stats`] — RTP reception statistics (loss, jitter) with time passed in;
//! * [`g711`] — PCMU/PCMA sample codecs.
//!
//! ## Design
//! * **No I/O, no clock, no threads.** Callers own sockets and time; this crate only turns bytes into values
//!   and values into bytes, so every function can be tested and fuzzed in isolation.
//! * **Zero-copy parsing.** Media parsers return views ([`rtp::RtpPacket`], [`roq::RoqDatagram`],
//!   [`rtcp::RtcpPacket`]) borrowing the input; payloads are never copied.
//! * **Caller-supplied output.** Writers serialize into `&mut [u8]` and return the length, so the hot path
//!   allocates nothing. Control messages (not on the hot path) decode into owned values.
//! * **Untrusted input never panics.** Every parser returns [`WireError`] with the structure, field and byte
//!   offset; property tests check round trips and that arbitrary bytes never panic, and `fuzz/` holds
//!   `cargo fuzz` targets for each parser (run with nightly:
//!   `cd crates/wire/fuzz && cargo +nightly fuzz run rtp`; targets: `rtp`, `rtcp`, `roq`, `control`).

pub mod control;
pub mod error;
pub mod g711;
pub mod roq;
pub mod rtcp;
pub mod rtp;
pub mod stats;

pub use control::{ControlMessage, Decoded, FlowDecl};
pub use error::{Result, WireError};
pub use roq::RoqDatagram;
pub use rtp::RtpPacket;
