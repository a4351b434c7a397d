//! Daemon configuration: TOML file, then environment, then command-line flags (the binary applies those).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mediaproc_net::server;
use serde::Deserialize;

use crate::error::DaemonError;

/// Environment variable holding the control API's bearer token.
pub const ENV_API_TOKEN: &str = "MEDIAPROC_API_TOKEN";

/// Largest `recording_max_bytes`: half of what a WAV header's u32 sizes can say.
pub const RECORDING_BYTES_CEILING: u64 = 1 << 31;

/// Largest `ws_max_message_bytes` (a bridge holds up to one message besides its 2 s of held audio).
pub const WS_MESSAGE_CEILING: usize = 1 << 20;
/// Largest `http_max_connections`.
pub const HTTP_CONNECTIONS_CEILING: usize = 1 << 20;
/// Largest `quic_max_connections` (the endpoint allocates a wake-up slot per connection up front).
pub const QUIC_CONNECTIONS_CEILING: usize = 1 << 20;
/// Smallest `quic_socket_buffer_bytes` (below it a burst of handshakes drops healthy calls' packets).
pub const QUIC_SOCKET_BUFFER_FLOOR: usize = 64 * 1024;

/// Largest `worker_wake_coalesce_us`: a tick later than 5 ms would eat into the jitter margin.
pub const WAKE_COALESCE_CEILING_US: u64 = 5_000;

/// Whether the daemon sends DTX to a WebRTC peer (`webrtc_dtx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebRtcDtx {
    /// When the peer's offer says `usedtx=1` (RFC 7587: its receiver prefers DTX).
    #[default]
    Offer,
    /// To every peer (every Opus receiver must cope; aiortc's plays the packets back to back, though).
    On,
    /// Never.
    Off,
}

impl WebRtcDtx {
    /// Whether a peer whose offer asked for DTX (`wants`) gets it.
    pub fn applies(self, wants: bool) -> bool {
        match self {
            WebRtcDtx::Offer => wants,
            WebRtcDtx::On => true,
            WebRtcDtx::Off => false,
        }
    }
}

/// Everything `mediaproc serve` can be told. Defaults work on a laptop.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Control API and bot WebSocket (loopback by default).
    pub api: SocketAddr,
    /// QUIC media endpoint at mpUri.
    pub media: SocketAddr,
    /// Host name written into mpUri and the development certificate.
    pub public_host: String,
    /// PEM certificate chain for the media endpoint; a self-signed development certificate when absent.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Bearer token of the control API; from `MEDIAPROC_API_TOKEN`, else generated and printed once.
    pub api_token: Option<String>,
    /// Media worker threads; 0 = one per core.
    pub workers: usize,
    /// Sessions the daemon accepts at most.
    pub max_sessions: usize,
    /// Largest control API request body, in bytes.
    pub max_body_bytes: usize,
    /// Where the `record` bot writes WAV files.
    pub recordings_dir: PathBuf,
    /// A recording file is closed when it holds this many seconds of audio.
    pub recording_max_seconds: u64,
    /// A recording file is closed before it grows past this many bytes (at most 2 GiB: WAV sizes are u32).
    pub recording_max_bytes: u64,
    /// Files one `record` session may create (the mix, each speaker, each rotated part); a speaker beyond it is
    /// not recorded (counted).
    pub recording_max_files: usize,
    /// At a file's cap: `true` opens the next part (`…-mixed.1.wav`), `false` stops recording that stream.
    pub recording_rotate: bool,
    /// The only directory the `play` bot reads files from (relative `bot.file` paths are taken inside it).
    pub media_dir: PathBuf,
    /// Largest file the `play` bot reads, in bytes.
    pub play_max_bytes: u64,
    /// A WebSocket bot that does not take a message within this many milliseconds is disconnected.
    pub ws_write_timeout_ms: u64,
    /// How often the bridge pings a WebSocket bot, in milliseconds.
    pub ws_ping_interval_ms: u64,
    /// A WebSocket bot that has not answered a ping with a pong within this many milliseconds is disconnected.
    pub ws_pong_timeout_ms: u64,
    /// Largest WebSocket message (and frame) accepted from a bot, in bytes.
    pub ws_max_message_bytes: usize,
    /// A client must send a request's headers within this many milliseconds, or the connection is closed.
    pub http_header_timeout_ms: u64,
    /// An authorised request's body must arrive within this many milliseconds.
    pub http_body_timeout_ms: u64,
    /// HTTP connections open at once; more are closed at accept (counted).
    pub http_max_connections: usize,
    /// Kernel send buffer of each HTTP (and bot WebSocket) connection, in bytes; 0 keeps the OS default. Smaller
    /// buffers make a bot that stops reading hit the write timeout sooner.
    pub http_send_buffer_bytes: usize,
    /// A QUIC connection with no attached session this many milliseconds after its handshake (or after its
    /// last session detached) is closed (close code 3; squatters).
    pub quic_attach_deadline_ms: u64,
    /// QUIC connections (open or in handshake) the media endpoint holds at most; more are refused before the
    /// handshake (counted).
    pub quic_max_connections: usize,
    /// QUIC connections (open or in handshake) one source IP address holds at most.
    pub quic_max_connections_per_address: usize,
    /// Refused attaches after which a QUIC connection is closed (close code 4).
    pub quic_max_refused_attaches: u32,
    /// Sustained QUIC handshakes per second; above it (after `quic_handshake_burst`) peers whose address is
    /// not validated get a stateless Retry. 0 = always Retry.
    pub quic_handshake_rate: u32,
    /// QUIC handshakes admitted in a burst above the sustained rate.
    pub quic_handshake_burst: u32,
    /// A QUIC handshake not complete after this many milliseconds is abandoned (counted as failed).
    pub quic_handshake_timeout_ms: u64,
    /// Control messages queued for a QUIC connection's writer at most; a peer that lets it fill is closed
    /// (close code 5).
    pub quic_control_queue_capacity: usize,
    /// Time one control-stream write may take, in milliseconds; a slower peer is closed (close code 5).
    pub quic_control_write_timeout_ms: u64,
    /// Kernel receive and send buffer of the QUIC media socket, in bytes (the kernel caps it at
    /// `net.core.rmem_max` / `wmem_max`).
    pub quic_socket_buffer_bytes: usize,
    /// Symmetric RTP/UDP edges: consecutive in-sequence packets from a new address before the edge follows it
    /// (NAT rebinding); a session request's `rtp.rebindPackets` overrides it.
    pub rtp_rebind_packets: u16,
    /// A media worker sleeps this many µs past its earliest session deadline, so the sessions due meanwhile share one
    /// wake-up (each tick late by at most this): less CPU (−14 % at 2000 with 50 echo calls), a little latency.
    pub worker_wake_coalesce_us: u64,
    /// Scheduling priority of the media workers (and, at most `high`, of the network threads): `realtime`
    /// (`SCHED_FIFO`), `high` (nice -10, the default) or `normal`; see [`crate::priority`]. Refused rights fall back
    /// with one warning at start.
    pub media_priority: crate::priority::MediaPriority,
    /// Opus decoder complexity of every inbound stream (0..=10): 7 (the default) runs libopus's deep PLC and NoLACE
    /// post-filter, 5 deep PLC alone, 0 the classic decoder at about a quarter of the cost per frame.
    pub decoder_complexity: u8,
    /// Address the WebRTC edge's peer sockets bind (`0.0.0.0` for every interface).
    pub webrtc_bind: IpAddr,
    /// Addresses the WebRTC edge offers as ICE host candidates; empty = `webrtc_bind` (required when that is
    /// unspecified: a browser cannot reach `0.0.0.0`).
    pub webrtc_candidates: Vec<IpAddr>,
    /// First UDP port of the WebRTC edge's range (one port per peer); 0 together with `webrtc_port_max = 0`
    /// lets the OS pick.
    pub webrtc_port_min: u16,
    /// Last UDP port of the WebRTC edge's range (inclusive).
    pub webrtc_port_max: u16,
    /// WebRTC peers the daemon holds at once, over all sessions; more offers are refused with 503.
    pub webrtc_max_peers: usize,
    /// ICE and DTLS must complete within this many milliseconds of the answer, or the peer fails (a session
    /// notice; the session is kept).
    pub webrtc_connect_timeout_ms: u64,
    /// Opus DTX toward WebRTC peers where the session's `encoder.dtx` is not set: a pause's packets after its
    /// first are not sent, and the browser's NetEQ starts each talk spurt as soon as it arrives (Chromium's echo
    /// round trip on talk spurts 11 ms lower at the median, docs/webrtc.md). By default for peers whose offer asks (`usedtx=1`).
    pub webrtc_dtx: WebRtcDtx,
    /// Serve the talk page at `/talk` and its page API (`/v1/talk/…`, behind a page token generated at start;
    /// `mediaproc demo --browser` turns it on). Off by default: the page token may create built-in-bot sessions.
    pub talk_page: bool,
    /// Worker load (share of the 20 ms tick spent working) from which `/healthz` says HeavilyLoaded.
    pub heavily_loaded_at: f64,
    /// Worker load from which `/healthz` says Overloaded and new sessions are refused with 503.
    pub overloaded_at: f64,
    /// The fleet (`[fleet]`, issue 12): off unless `redis` is set. See `docs/fleet.md`.
    pub fleet: FleetConfig,
}

/// Environment variable holding the fleet's shared node-to-node secret.
pub const ENV_FLEET_SECRET: &str = "MEDIAPROC_FLEET_SECRET";

/// What a node does with `POST /v1/sessions` while the fleet registry is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnreachable {
    /// Create the session on this node (if it has room).
    Local,
    /// Refuse with 503 `fleet_unavailable`.
    Refuse,
}

/// The fleet part of the configuration (`[fleet]` in TOML; `serve --fleet …` flags).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The registry, `redis://host:6379/0`; none = a lone daemon.
    pub redis: Option<String>,
    /// This node's id in the registry (the pod name in Kubernetes); default: `$HOSTNAME`, else random.
    pub node_id: Option<String>,
    /// The shared secret nodes present to each other (`MEDIAPROC_FLEET_SECRET`), at least 16 characters.
    pub secret: Option<String>,
    /// Calls this node may carry; 0 = `max_sessions`.
    pub capacity: usize,
    /// This node's control API as other nodes and bots reach it (`http://10.0.0.7:8080`); default: the bound
    /// address (loopback for an unspecified one).
    pub api_url: Option<String>,
    /// While the registry is unreachable: place `local`ly, or `refuse`.
    pub when_unreachable: WhenUnreachable,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// A node record lives this long after its last heartbeat (ms): a killed node leaves placement by then.
    pub node_ttl_ms: u64,
    /// A reservation expires after this long (ms) unless the chosen node reports the session first.
    pub reservation_ttl_ms: u64,
    /// Deadline of the drain SIGTERM starts (s): the calls left then are ended (reason `drain deadline`).
    pub drain_deadline_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            redis: None,
            node_id: None,
            secret: None,
            capacity: 0,
            api_url: None,
            when_unreachable: WhenUnreachable::Local,
            key_prefix: "mediaproc:".to_owned(),
            heartbeat_ms: 1_000,
            node_ttl_ms: 3_000,
            reservation_ttl_ms: 15_000,
            drain_deadline_s: 3_600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: SocketAddr::from(([127, 0, 0, 1], 8080)),
            media: SocketAddr::from(([0, 0, 0, 0], 4433)),
            public_host: "localhost".to_owned(),
            cert: None,
            key: None,
            api_token: None,
            workers: 0,
            max_sessions: 1000,
            max_body_bytes: 64 * 1024,
            recordings_dir: PathBuf::from("recordings"),
            recording_max_seconds: 4 * 3600,
            recording_max_bytes: 1 << 30,
            recording_max_files: 16,
            recording_rotate: true,
            media_dir: PathBuf::from("media"),
            play_max_bytes: 32 << 20,
            ws_write_timeout_ms: 2_000,
            ws_ping_interval_ms: 5_000,
            ws_pong_timeout_ms: 10_000,
            ws_max_message_bytes: 64 * 1024,
            http_header_timeout_ms: 5_000,
            http_body_timeout_ms: 10_000,
            http_max_connections: 1024,
            http_send_buffer_bytes: 0,
            quic_attach_deadline_ms: millis(server::ATTACH_DEADLINE),
            quic_max_connections: server::MAX_CONNECTIONS,
            quic_max_connections_per_address: server::MAX_CONNECTIONS_PER_ADDRESS,
            quic_max_refused_attaches: server::MAX_REFUSED_ATTACHES,
            quic_handshake_rate: server::HANDSHAKE_RATE,
            quic_handshake_burst: server::HANDSHAKE_BURST,
            quic_handshake_timeout_ms: millis(server::HANDSHAKE_TIMEOUT),
            quic_control_queue_capacity: server::CONTROL_QUEUE_CAPACITY,
            quic_control_write_timeout_ms: millis(server::CONTROL_WRITE_TIMEOUT),
            quic_socket_buffer_bytes: server::SOCKET_BUFFER,
            rtp_rebind_packets: mediaproc_net::udp::REBIND_PACKETS,
            worker_wake_coalesce_us: 0,
            media_priority: crate::priority::MediaPriority::default(),
            decoder_complexity: mediaproc_pipeline::DEFAULT_DECODER_COMPLEXITY,
            webrtc_bind: IpAddr::from([127, 0, 0, 1]),
            webrtc_candidates: Vec::new(),
            webrtc_port_min: 0,
            webrtc_port_max: 0,
            webrtc_max_peers: 32,
            webrtc_connect_timeout_ms: millis(mediaproc_net::webrtc::CONNECT_TIMEOUT),
            webrtc_dtx: WebRtcDtx::default(),
            talk_page: false,
            heavily_loaded_at: 0.7,
            overloaded_at: 0.9,
            fleet: FleetConfig::default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Config {
    /// Parses a TOML configuration; unknown keys and wrong types are errors naming the key and line.
    pub fn from_toml(text: &str) -> Result<Config, DaemonError> {
        toml::from_str(text)
            .map_err(|err| DaemonError::Config(err.to_string().trim_end().replace('\n', " ")))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, DaemonError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            DaemonError::Config(format!("{}: cannot read: {err}", path.display()))
        })?;
        Config::from_toml(&text)
            .map_err(|err| DaemonError::Config(format!("{}: {err}", path.display())))
    }

    /// Applies the environment (`MEDIAPROC_API_TOKEN`), given as a lookup so tests need not touch the process.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(token) = lookup(ENV_API_TOKEN).filter(|t| !t.is_empty()) {
            self.api_token = Some(token);
        }
        if let Some(secret) = lookup(ENV_FLEET_SECRET).filter(|t| !t.is_empty()) {
            self.fleet.secret = Some(secret);
        }
    }

    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.fleet.redis.is_some() {
            if self
                .fleet
                .secret
                .as_deref()
                .is_none_or(|s| s.trim().len() < 16)
            {
                return Err(DaemonError::Config(format!(
                    "a fleet node needs the shared secret (`fleet.secret` or {ENV_FLEET_SECRET}), at least 16 \
                     characters"
                )));
            }
            if self.fleet.heartbeat_ms == 0 || self.fleet.node_ttl_ms <= self.fleet.heartbeat_ms {
                return Err(DaemonError::Config(
                    "need 0 < fleet.heartbeat_ms < fleet.node_ttl_ms".to_owned(),
                ));
            }
        }
        if self.decoder_complexity > 10 {
            return Err(DaemonError::Config(format!(
                "`decoder_complexity` must be 0..=10 (got {})",
                self.decoder_complexity
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(DaemonError::Config(
                "`cert` and `key` go together: give both or neither".to_owned(),
            ));
        }
        if !(0.0 < self.heavily_loaded_at && self.heavily_loaded_at < self.overloaded_at) {
            return Err(DaemonError::Config(
                "need 0 < heavily_loaded_at < overloaded_at (shares of the 20 ms tick)".to_owned(),
            ));
        }
        if self
            .api_token
            .as_deref()
            .is_some_and(|token| token.trim().len() < 8)
        {
            return Err(DaemonError::Config(
                "`api_token` must be at least 8 characters (leave it out to have one generated)"
                    .to_owned(),
            ));
        }
        if self.public_host.trim().is_empty() {
            return Err(DaemonError::Config(
                "`public_host` must not be empty".to_owned(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(DaemonError::Config(
                "`max_body_bytes` below 1024 would refuse ordinary requests".to_owned(),
            ));
        }
        // hound writes u32 sizes: a file must stay well below 4 GiB or its header wraps (a corrupt file).
        if !(4096..=RECORDING_BYTES_CEILING).contains(&self.recording_max_bytes) {
            return Err(DaemonError::Config(format!(
                "`recording_max_bytes` must be from 4096 to {RECORDING_BYTES_CEILING} (2 GiB)"
            )));
        }
        let positive = [
            ("recording_max_seconds", self.recording_max_seconds),
            ("recording_max_files", self.recording_max_files as u64),
            ("play_max_bytes", self.play_max_bytes),
            ("ws_write_timeout_ms", self.ws_write_timeout_ms),
            ("ws_ping_interval_ms", self.ws_ping_interval_ms),
            ("ws_pong_timeout_ms", self.ws_pong_timeout_ms),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
            ("http_max_connections", self.http_max_connections as u64),
            ("quic_attach_deadline_ms", self.quic_attach_deadline_ms),
            ("quic_max_connections", self.quic_max_connections as u64),
            (
                "quic_max_connections_per_address",
                self.quic_max_connections_per_address as u64,
            ),
            (
                "quic_max_refused_attaches",
                u64::from(self.quic_max_refused_attaches),
            ),
            ("quic_handshake_timeout_ms", self.quic_handshake_timeout_ms),
            (
                "quic_control_queue_capacity",
                self.quic_control_queue_capacity as u64,
            ),
            (
                "quic_control_write_timeout_ms",
                self.quic_control_write_timeout_ms,
            ),
            ("rtp_rebind_packets", u64::from(self.rtp_rebind_packets)),
            ("webrtc_max_peers", self.webrtc_max_peers as u64),
            ("webrtc_connect_timeout_ms", self.webrtc_connect_timeout_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(DaemonError::Config(format!("`{key}` must be above 0")));
        }
        if self.worker_wake_coalesce_us > WAKE_COALESCE_CEILING_US {
            return Err(DaemonError::Config(format!(
                "`worker_wake_coalesce_us` must be at most {WAKE_COALESCE_CEILING_US} (a later tick eats into the \
                 jitter margin)"
            )));
        }
        if !(4096..=WS_MESSAGE_CEILING).contains(&self.ws_max_message_bytes) {
            return Err(DaemonError::Config(format!(
                "`ws_max_message_bytes` must be from 4096 (ordinary frames) to {WS_MESSAGE_CEILING}"
            )));
        }
        if self.http_max_connections > HTTP_CONNECTIONS_CEILING {
            return Err(DaemonError::Config(format!(
                "`http_max_connections` above {HTTP_CONNECTIONS_CEILING} is not a cap"
            )));
        }
        if self.quic_max_connections > QUIC_CONNECTIONS_CEILING {
            return Err(DaemonError::Config(format!(
                "`quic_max_connections` above {QUIC_CONNECTIONS_CEILING} is not a cap"
            )));
        }
        if self.quic_max_connections_per_address > self.quic_max_connections {
            return Err(DaemonError::Config(
                "`quic_max_connections_per_address` above `quic_max_connections` is not a cap"
                    .to_owned(),
            ));
        }
        if self.quic_socket_buffer_bytes < QUIC_SOCKET_BUFFER_FLOOR {
            return Err(DaemonError::Config(format!(
                "`quic_socket_buffer_bytes` below {QUIC_SOCKET_BUFFER_FLOOR} drops packets in a handshake burst"
            )));
        }
        if self.webrtc_port_min > self.webrtc_port_max
            || (self.webrtc_port_min == 0) != (self.webrtc_port_max == 0)
        {
            return Err(DaemonError::Config(
                "`webrtc_port_min`..`webrtc_port_max` must be a range (min <= max), or both 0 for any port"
                    .to_owned(),
            ));
        }
        if self.webrtc_bind.is_unspecified() && self.webrtc_candidates.is_empty() {
            return Err(DaemonError::Config(
                "`webrtc_bind` is unspecified: list the addresses browsers reach in `webrtc_candidates`"
                    .to_owned(),
            ));
        }
        if let Some(ip) = self.webrtc_candidates.iter().find(|ip| ip.is_unspecified()) {
            return Err(DaemonError::Config(format!(
                "`webrtc_candidates` lists {ip}, which no peer can reach"
            )));
        }
        Ok(())
    }

    /// The WebRTC edge's configuration for a session whose pipeline takes Opus on `payload_type`.
    pub fn webrtc(&self, payload_type: u8) -> mediaproc_net::WebRtcConfig {
        let mut config = mediaproc_net::WebRtcConfig::loopback(payload_type);
        config.bind_ip = self.webrtc_bind;
        config.candidates = self.webrtc_candidates.clone();
        config.port_min = self.webrtc_port_min;
        config.port_max = self.webrtc_port_max;
        config.connect_timeout = Duration::from_millis(self.webrtc_connect_timeout_ms);
        config
    }

    /// The QUIC media endpoint's limits applied to a network configuration.
    pub fn apply_endpoint_limits(&self, server: &mut server::ServerConfig) {
        server.attach_deadline = Duration::from_millis(self.quic_attach_deadline_ms);
        server.max_connections = self.quic_max_connections;
        server.max_connections_per_address = self.quic_max_connections_per_address;
        server.max_refused_attaches = self.quic_max_refused_attaches;
        server.handshake_rate = self.quic_handshake_rate;
        server.handshake_burst = self.quic_handshake_burst;
        server.handshake_timeout = Duration::from_millis(self.quic_handshake_timeout_ms);
        server.control_queue_capacity = self.quic_control_queue_capacity;
        server.control_write_timeout = Duration::from_millis(self.quic_control_write_timeout_ms);
        server.socket_buffer = self.quic_socket_buffer_bytes;
    }

    /// The effective media limits in one line, for the startup log.
    pub fn media_limits_line(&self) -> String {
        format!(
            "max_sessions={} quic_max_connections={} quic_max_connections_per_address={} \
             quic_attach_deadline_ms={} quic_max_refused_attaches={} quic_handshake_rate={}/s \
             quic_handshake_burst={} quic_handshake_timeout_ms={} quic_control_queue_capacity={} \
             quic_control_write_timeout_ms={} quic_socket_buffer_bytes={} rtp_rebind_packets={} \
             webrtc_max_peers={} webrtc_ports={}-{}",
            self.max_sessions,
            self.quic_max_connections,
            self.quic_max_connections_per_address,
            self.quic_attach_deadline_ms,
            self.quic_max_refused_attaches,
            self.quic_handshake_rate,
            self.quic_handshake_burst,
            self.quic_handshake_timeout_ms,
            self.quic_control_queue_capacity,
            self.quic_control_write_timeout_ms,
            self.quic_socket_buffer_bytes,
            self.rtp_rebind_packets,
            self.webrtc_max_peers,
            self.webrtc_port_min,
            self.webrtc_port_max,
        )
    }

    /// `ws_write_timeout_ms` as a duration.
    pub fn ws_write_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_write_timeout_ms)
    }

    /// Worker threads to start: the configured number, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_have_sane_defaults_and_bounds() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert!(config.recording_max_bytes < RECORDING_BYTES_CEILING);
        let bad = [
            Config {
                recording_max_bytes: 5 << 30,
                ..Config::default()
            },
            Config {
                recording_max_files: 0,
                ..Config::default()
            },
            Config {
                ws_write_timeout_ms: 0,
                ..Config::default()
            },
            Config {
                ws_max_message_bytes: 16 << 20,
                ..Config::default()
            },
            Config {
                worker_wake_coalesce_us: WAKE_COALESCE_CEILING_US + 1,
                ..Config::default()
            },
            Config {
                http_max_connections: 0,
                ..Config::default()
            },
            Config {
                quic_max_connections: 0,
                ..Config::default()
            },
            Config {
                quic_max_connections_per_address: 2048,
                ..Config::default()
            },
            Config {
                quic_socket_buffer_bytes: 0,
                ..Config::default()
            },
            Config {
                rtp_rebind_packets: 0,
                ..Config::default()
            },
            Config {
                webrtc_port_min: 50_010,
                webrtc_port_max: 50_000,
                ..Config::default()
            },
            Config {
                webrtc_bind: IpAddr::from([0, 0, 0, 0]),
                ..Config::default()
            },
            Config {
                webrtc_max_peers: 0,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let parsed = Config::from_toml(
            "media_dir = \"/srv/media\"\nrecording_rotate = false\nhttp_max_connections = 64\n",
        )
        .unwrap_or_default();
        assert_eq!(parsed.media_dir, PathBuf::from("/srv/media"));
        assert!(!parsed.recording_rotate);
        assert_eq!(parsed.http_max_connections, 64);
        assert!(Config::from_toml("recording_max_bytez = 1").is_err());
        use crate::priority::MediaPriority;
        assert_eq!(Config::default().media_priority, MediaPriority::High);
        let classic = Config::from_toml("decoder_complexity = 0").unwrap();
        assert_eq!(classic.decoder_complexity, 0);
        let err = Config::from_toml("decoder_complexity = 11")
            .and_then(|c| c.validate().map(|()| c))
            .unwrap_err();
        assert!(err.to_string().contains("decoder_complexity"), "{err}");
        let rt = Config::from_toml("media_priority = \"realtime\"").unwrap();
        assert_eq!(rt.media_priority, MediaPriority::Realtime);
        let err = Config::from_toml("media_priority = \"urgent\"").unwrap_err();
        assert!(err.to_string().contains("media_priority"), "{err}");
        assert_eq!(Config::default().webrtc_dtx, WebRtcDtx::Offer);
        let on = Config::from_toml("webrtc_dtx = \"on\"").unwrap();
        assert!(on.webrtc_dtx.applies(false));
        assert!(WebRtcDtx::Offer.applies(true) && !WebRtcDtx::Offer.applies(false));
        assert!(!WebRtcDtx::Off.applies(true));
        let err = Config::from_toml("webrtc_dtx = true").unwrap_err();
        assert!(err.to_string().contains("webrtc_dtx"), "{err}");
    }

    #[test]
    fn endpoint_limits_default_to_the_network_layers_and_reach_its_config() {
        let defaults = Config::default();
        let mut net = server::ServerConfig::development(defaults.media);
        let before = format!("{net:?}");
        defaults.apply_endpoint_limits(&mut net);
        assert_eq!(
            format!("{net:?}"),
            before,
            "the daemon's defaults are the network layer's"
        );
        let config = Config::from_toml(
            "quic_attach_deadline_ms = 1500\nquic_max_connections = 10\n\
             quic_max_connections_per_address = 2\nquic_max_refused_attaches = 1\n\
             quic_handshake_rate = 0\nquic_handshake_burst = 5\nquic_handshake_timeout_ms = 3000\n\
             quic_control_queue_capacity = 8\nquic_control_write_timeout_ms = 500\n\
             quic_socket_buffer_bytes = 1048576\nrtp_rebind_packets = 8\n",
        )
        .unwrap_or_default();
        assert!(config.validate().is_ok());
        config.apply_endpoint_limits(&mut net);
        assert_eq!(net.attach_deadline, Duration::from_millis(1500));
        assert_eq!(net.max_connections, 10);
        assert_eq!(net.max_connections_per_address, 2);
        assert_eq!(net.max_refused_attaches, 1);
        assert_eq!(net.handshake_rate, 0);
        assert_eq!(net.handshake_burst, 5);
        assert_eq!(net.handshake_timeout, Duration::from_secs(3));
        assert_eq!(net.control_queue_capacity, 8);
        assert_eq!(net.control_write_timeout, Duration::from_millis(500));
        assert_eq!(net.socket_buffer, 1 << 20);
        assert_eq!(config.rtp_rebind_packets, 8);
        assert!(
            config
                .media_limits_line()
                .contains("quic_max_connections=10 ")
        );
    }
}
