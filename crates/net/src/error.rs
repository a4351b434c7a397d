//! The one error type of this crate.

use std::net::SocketAddr;

/// Errors of the network shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Binding a socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading certificate or key files failed.
    #[error("TLS material `{path}`: {reason}")]
    TlsFile {
        /// File concerned.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Building the TLS/QUIC configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Connecting to the media processor failed.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Remote address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The QUIC connection was lost or closed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// A session with this id is already registered.
    #[error("session {0} already exists")]
    SessionExists(uuid::Uuid),
    /// The session token is not acceptable (16..=64 bytes required).
    #[error("edge token must be 16..=64 bytes, got {0}")]
    BadToken(usize),
    /// The peer answered with a protocol error.
    #[error("peer error 0x{code:04x}: {message}")]
    Peer {
        /// Error code from the control message.
        code: u16,
        /// Its text.
        message: String,
    },
    /// The peer sent something that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A wire format error.
    #[error(transparent)]
    Wire(#[from] mediaproc_wire::WireError),
    /// A datagram could not be sent (too large, or datagrams unsupported by the peer).
    #[error("datagram not sent: {0}")]
    Datagram(String),
    /// An I/O error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A WebRTC offer that does not parse or lacks what the edge needs (an audio m-line).
    #[error("SDP offer: {0}")]
    Sdp(String),
    /// A WebRTC offer without Opus.
    #[error("no Opus in the offer: {0}")]
    NoOpus(String),
    /// Every UDP port of the WebRTC port range is in use.
    #[error("no free UDP port in the WebRTC port range {first}-{last}")]
    NoPort {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// Waiting for the peer timed out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}
