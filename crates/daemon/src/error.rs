//! The crate's one error type: what can stop the daemon, and what can refuse a request.
//!
//! Every layer returns [`DaemonError`]; only the control API (`crate::api`) turns it into an HTTP status and a
//! stable error code, so the lower layers know nothing about HTTP.

use thiserror::Error;

/// What can stop the daemon or refuse a request. The `Display` text is the sentence an API error carries.
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
    /// The media engine (endpoint, pipeline or a worker) failed.
    #[error("media: {0}")]
    Media(String),
    /// A request body that is not valid JSON or does not have the expected shape.
    #[error("{0}")]
    InvalidBody(String),
    /// A request body larger than the limit.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// A well-formed request with a value out of range or unknown.
    #[error("{0}")]
    InvalidSession(String),
    /// A built-in bot cannot start (its file is refused or unreadable, its directory cannot be made).
    #[error("{0}")]
    InvalidBot(String),
    /// The RTP/UDP edge's local address cannot be bound.
    #[error("rtp.local: {0}")]
    RtpBind(String),
    /// A codec the pipeline does not transcode.
    #[error("{0}")]
    CodecNotSupported(String),
    /// A missing or wrong token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// No such session.
    #[error("no session `{0}`")]
    SessionNotFound(String),
    /// No such route.
    #[error("no such route")]
    RouteNotFound,
    /// A known route with a method it does not serve.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// The session's bot port is held by another bot.
    #[error("a bot is already connected to this session")]
    BotConnected,
    /// A WebSocket asked for on a session with a built-in bot.
    #[error("session `{id}` is served by the built-in `{bot}` bot")]
    NotAWebSocketSession {
        /// The session.
        id: String,
        /// Its bot.
        bot: &'static str,
    },
    /// A WebRTC offer that does not parse or has no audio.
    #[error("SDP offer: {0}")]
    InvalidSdp(String),
    /// A WebRTC offer without Opus.
    #[error("no Opus in the offer: {0}")]
    NoOpus(String),
    /// `webrtc_max_peers` peers are running.
    #[error("the daemon runs its maximum of {max} WebRTC peers")]
    TooManyPeers {
        /// `webrtc_max_peers`.
        max: usize,
    },
    /// Every port of the WebRTC range is taken.
    #[error("{0}")]
    NoWebRtcPort(String),
    /// No such WebRTC resource on the session.
    #[error("no WebRTC resource `{0}` on this session")]
    WebRtcNotFound(String),
    /// Shutdown has begun.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Fleet (issue 12): no node can take the session, or the registry is unreachable and the configuration says
    /// refuse.
    #[error("{0}")]
    FleetUnavailable(String),
    /// Fleet (issue 12): the session was placed on a node that left the fleet (killed, or its heartbeat stopped).
    #[error("session {id} was on node `{node}`, which left the fleet: the session is lost")]
    SessionLost {
        /// The session id.
        id: String,
        /// The node that held it.
        node: String,
    },
    /// The media workers are overloaded.
    #[error("media workers are overloaded; try another instance or later")]
    Overloaded,
    /// The daemon holds its maximum of sessions.
    #[error("the daemon holds its maximum of {max} sessions")]
    TooManySessions {
        /// `max_sessions`.
        max: usize,
    },
}

impl DaemonError {
    /// A media failure with what was being done.
    pub fn media(what: &str, err: &dyn std::fmt::Display) -> Self {
        DaemonError::Media(format!("{what}: {err}"))
    }
}
