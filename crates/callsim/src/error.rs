//! The crate's error type.

/// What can go wrong in the emulator or the edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallsimError {
    /// The blob of a call cannot be used by the edge.
    #[error("blob: {0}")]
    Blob(String),
    /// A WAV file for a voice cannot be used.
    #[error("{0}")]
    Wav(String),
    /// The media connection or codec failed.
    #[error("media: {0}")]
    Media(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

use std::net::SocketAddr;
