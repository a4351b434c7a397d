//! # mediaproc-callsim — the other side, for local development, tests and load
//!
//! Nobody can develop against the real calling service on a laptop. This crate plays it:
//! - [`graph`]: a Graph calls endpoint that answers `POST /{v1.0,beta}/app/calls` the way the Graph documentation
//!   shows — `201 Created` with the call object, then `commsNotifications` (`establishing`, `established`, the roster
//!   for meetings, the lobby for guests, `terminated` on `DELETE`) to the call's `callbackUri`;
//! - [`edge`]: a media edge that, for an app-hosted call, reads the blob, connects to `mpUri` (QUIC), attaches with
//!   the session's token and speaks for the participants — speech-like voices taking turns, Opus over RTP with
//!   RFC 6464 audio levels, optional loss, jitter and clock drift — while it listens to the bot and measures the
//!   round trip of talk-spurt onsets, loss and concealment.
//!
//! - [`load`]: many sessions on one connection, one talking participant each, for load measurements.
//!
//! Validation uses `mediaproc-blob`, so the emulator refuses exactly what the blob crate calls invalid, with
//! Graph's error shape.

pub mod edge;
pub mod error;
pub mod graph;
pub mod load;
pub mod voice;

pub use error::CallsimError;
