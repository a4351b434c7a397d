//! The crate's error type.

use thiserror::Error;

/// What can stop the daemon or refuse a request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The media engine failed.
    #[error("media: {0}")]
    Media(String),
}
