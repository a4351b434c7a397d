//! `/metrics`: Prometheus text exposition of the engine (sessions, load, drops, the QUIC endpoint) and of the
//! HTTP front (its counters are kept here, in [`HttpCounters`], so this module needs nothing above the engine).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Engine;
use crate::fleet::FleetCounters;
use crate::health::HealthStatus;
use crate::session::Dropped;
use crate::worker::STREAM_FIELDS;
use serde_json::Value;

/// Counters of the HTTP front (the control API's accept loop and its auth).
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests refused for a bad or missing token.
    pub unauthorized: AtomicU64,
    /// Connections accepted and served.
    pub connections: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections closed at accept because `http_max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed because the request headers did not arrive within `http_header_timeout_ms`.
    pub header_timeouts: AtomicU64,
}

struct Out(String);

impl Out {
    fn metric(&mut self, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.metric("gauge", name, help, value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.metric("counter", name, help, value);
    }

    /// A Prometheus histogram in seconds from bucket bounds in µs, per-bucket counts (the last: above them all) and
    /// the sum of the values in µs.
    fn histogram_seconds(
        &mut self,
        name: &str,
        help: &str,
        bounds_us: &[u64],
        counts: &[u64],
        sum_us: u64,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in bounds_us.iter().zip(counts) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let total: u64 = counts.iter().sum();
        let sum = sum_us as f64 / 1e6;
        let _ = writeln!(
            self.0,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
        );
    }
}

/// Renders the daemon's metrics (and a fleet node's placement counters).
pub fn render(engine: &Engine, http: &HttpCounters, fleet: Option<&FleetCounters>) -> String {
    let mut out = Out(String::with_capacity(4096));
    if let Some(f) = fleet {
        for (name, help, value) in [
            (
                "mediaproc_fleet_placed_here_total",
                "Sessions the registry placed on this node.",
                &f.placed_here,
            ),
            (
                "mediaproc_fleet_placed_remote_total",
                "Sessions this node placed on another node.",
                &f.placed_remote,
            ),
            (
                "mediaproc_fleet_placed_local_unreachable_total",
                "Sessions created here because the registry was unreachable (when_unreachable = local).",
                &f.placed_local_unreachable,
            ),
            (
                "mediaproc_fleet_refused_total",
                "Creations refused: no node with headroom, or the registry unreachable (when_unreachable = refuse).",
                &f.refused,
            ),
            (
                "mediaproc_fleet_reservations_refused_total",
                "Reservations the registry's script refused (full, draining, gone): races lost to other placers.",
                &f.reservations_refused,
            ),
            (
                "mediaproc_fleet_remote_failures_total",
                "Node-to-node creations that failed (the next candidate was tried).",
                &f.remote_failures,
            ),
            (
                "mediaproc_fleet_heartbeat_failures_total",
                "Heartbeats that failed.",
                &f.heartbeat_failures,
            ),
            (
                "mediaproc_fleet_forwarded_total",
                "Requests forwarded to the node holding the session.",
                &f.forwarded,
            ),
        ] {
            out.counter(name, help, value.load(Ordering::Relaxed));
        }
    }
    let load = engine.load();
    out.gauge(
        "mediaproc_sessions",
        "Media sessions held by the daemon.",
        engine.session_count(),
    );
    out.gauge(
        "mediaproc_health_status",
        "0 Normal, 1 HeavilyLoaded, 2 Overloaded.",
        match load.status() {
            HealthStatus::Normal => 0,
            HealthStatus::HeavilyLoaded => 1,
            HealthStatus::Overloaded => 2,
        },
    );
    let _ = writeln!(
        out.0,
        "# HELP mediaproc_worker_load Share of the 20 ms tick a media worker spends working."
    );
    let _ = writeln!(out.0, "# TYPE mediaproc_worker_load gauge");
    for (i, busy) in load.loads().iter().enumerate() {
        let _ = writeln!(out.0, "mediaproc_worker_load{{worker=\"{i}\"}} {busy}");
    }
    let c = &engine.counters;
    out.counter(
        "mediaproc_sessions_created_total",
        "Sessions created.",
        c.sessions_created.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_api_unauthorized_total",
        "Requests refused for a missing or wrong token.",
        http.unauthorized.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_sessions_refused_overloaded_total",
        "Sessions refused because the workers were overloaded.",
        c.refused_overloaded.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_sessions_refused_full_total",
        "Sessions refused because max_sessions were held.",
        c.refused_full.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_session_end_unconfirmed_total",
        "Session ends the media worker did not confirm in time.",
        c.end_unconfirmed.load(Ordering::Relaxed),
    );
    let w = &engine.webrtc;
    out.gauge(
        "mediaproc_webrtc_peers",
        "WebRTC peers running (connecting or connected).",
        engine.webrtc_peers(),
    );
    for (name, help, value) in [
        ("answered", "WebRTC offers answered.", &w.answered),
        (
            "refused_sdp",
            "WebRTC offers refused: malformed SDP or no audio.",
            &w.refused_sdp,
        ),
        (
            "refused_no_opus",
            "WebRTC offers refused: no Opus.",
            &w.refused_no_opus,
        ),
        (
            "refused_full",
            "WebRTC offers refused: webrtc_max_peers or no free port.",
            &w.refused_full,
        ),
        (
            "connected",
            "WebRTC peers that completed ICE and DTLS.",
            &w.connected,
        ),
        (
            "failed",
            "WebRTC peers that failed (ICE, DTLS or the connect timeout).",
            &w.failed,
        ),
        (
            "closed",
            "WebRTC peers closed (by the peer, the daemon, or lost ICE).",
            &w.closed,
        ),
        (
            "replaced",
            "WebRTC peers replaced by a newer offer on their session.",
            &w.replaced,
        ),
    ] {
        out.counter(
            &format!("mediaproc_webrtc_{name}_total"),
            help,
            value.load(Ordering::Relaxed),
        );
    }
    out.counter(
        "mediaproc_late_ticks_total",
        "Media ticks run more than a frame late.",
        load.late_ticks().iter().sum(),
    );
    let (lateness, _, lateness_sum_us) = load.lateness();
    out.histogram_seconds(
        "mediaproc_tick_lateness_seconds",
        "How late session ticks started after their deadline.",
        &crate::health::LATENESS_BUCKETS_US,
        &lateness,
        lateness_sum_us,
    );
    for (name, help, histogram) in [
        (
            "mediaproc_packet_to_worker_seconds",
            "From a packet's arrival at the socket to the media worker taking it from the receive ring.",
            &load.packet_to_worker,
        ),
        (
            "mediaproc_tick_to_bot_seconds",
            "From a tick's deadline to its frame in the bot's inbound ring (decode, mix).",
            &load.tick_to_bot,
        ),
        (
            "mediaproc_bot_to_sent_seconds",
            "From a packet queued at its tick (the bot's frame taken and encoded) to its hand-off to the socket.",
            &load.bot_to_sent,
        ),
    ] {
        let h = histogram.snapshot();
        out.histogram_seconds(
            name,
            help,
            &crate::health::LATENESS_BUCKETS_US,
            &h.counts,
            h.sum_us,
        );
    }

    // Every drop of every session, daemon-wide (they are also in each session's statistics).
    for kind in Dropped::ALL {
        let (name, help) = kind.metric();
        out.counter(
            &format!("mediaproc_{name}_total"),
            help,
            engine.drops.get(kind),
        );
    }

    // The HTTP front.
    out.counter(
        "mediaproc_http_connections_total",
        "HTTP connections accepted and served.",
        http.connections.load(Ordering::Relaxed),
    );
    out.gauge(
        "mediaproc_http_connections_open",
        "HTTP connections open now.",
        http.connections_open.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_http_connections_refused_total",
        "HTTP connections closed at accept because http_max_connections were open.",
        http.connections_refused.load(Ordering::Relaxed),
    );
    out.counter(
        "mediaproc_http_header_timeouts_total",
        "HTTP connections closed because the request headers did not arrive in time.",
        http.header_timeouts.load(Ordering::Relaxed),
    );

    // The QUIC media endpoint. (Ring overflow and strict-RTP drops are per session, summed above as
    // `mediaproc_rx_ring_dropped_total`, `mediaproc_tx_ring_dropped_total`, `mediaproc_rtp_udp_…_total`.)
    let net = engine.network_stats();
    out.counter(
        "mediaproc_quic_connections_total",
        "QUIC connections accepted by the media endpoint.",
        net.connections,
    );
    out.gauge(
        "mediaproc_quic_connections_open",
        "QUIC connections open now.",
        net.connections_open,
    );
    out.counter(
        "mediaproc_quic_datagrams_received_total",
        "Datagrams received on the media endpoint.",
        net.datagrams_rx,
    );
    out.counter(
        "mediaproc_quic_datagrams_sent_total",
        "Datagrams sent by the media endpoint.",
        net.datagrams_tx,
    );
    out.counter(
        "mediaproc_quic_received_bytes_total",
        "Datagram bytes received on the media endpoint.",
        net.bytes_rx,
    );
    out.counter(
        "mediaproc_quic_sent_bytes_total",
        "Datagram bytes sent by the media endpoint.",
        net.bytes_tx,
    );
    out.counter(
        "mediaproc_quic_malformed_total",
        "Datagrams dropped because they did not parse.",
        net.malformed,
    );
    out.counter(
        "mediaproc_quic_unknown_flow_total",
        "Datagrams dropped because their flow was not declared.",
        net.unknown_flow,
    );
    out.counter(
        "mediaproc_quic_attach_refused_total",
        "Attach attempts refused (unknown session or wrong token).",
        net.refused,
    );
    out.counter(
        "mediaproc_quic_protocol_errors_total",
        "Control-stream protocol errors.",
        net.protocol_errors,
    );
    out.counter(
        "mediaproc_quic_connections_refused_total",
        "Connection attempts refused before the handshake at a connection cap (global or per address).",
        net.connections_refused,
    );
    out.counter(
        "mediaproc_quic_connections_refused_per_address_total",
        "The part of the refused connection attempts due to the per-address cap.",
        net.connections_refused_per_address,
    );
    out.counter(
        "mediaproc_quic_retries_total",
        "Stateless Retry packets sent because handshakes came faster than handshake_rate.",
        net.retries,
    );
    out.counter(
        "mediaproc_quic_handshakes_failed_total",
        "Handshakes that did not complete (including those past handshake_timeout).",
        net.handshakes_failed,
    );
    out.counter(
        "mediaproc_quic_closed_attach_deadline_total",
        "Connections closed because no session was attached within the attach deadline (squatters).",
        net.closed_attach_deadline,
    );
    out.counter(
        "mediaproc_quic_closed_refused_attaches_total",
        "Connections closed after max_refused_attaches refused attaches.",
        net.closed_refused_attaches,
    );
    out.counter(
        "mediaproc_quic_closed_control_stalled_total",
        "Connections closed because the peer stopped reading its control stream.",
        net.closed_control_stalled,
    );

    sessions(&mut out, engine);
    out.0
}

/// Per-edge statistics of a session, read from its published statistics: (member of `network` / `rtpUdp`,
/// metric, counter?, help).
const EDGE_FIELDS: &[(&str, &str, bool, &str)] = &[
    (
        "lost",
        "mediaproc_edge_lost_total",
        true,
        "RTP packets lost on the session's edge (RFC 3550 cumulative loss).",
    ),
    (
        "jitterUs",
        "mediaproc_edge_jitter_us",
        false,
        "Interarrival jitter of the session's edge (RFC 3550 A.8), in microseconds.",
    ),
    (
        "rtcpRttUs",
        "mediaproc_edge_rtcp_rtt_us",
        false,
        "Round-trip time from RTCP reports on the session's edge, in microseconds (0 until measured).",
    ),
];

/// Per-session series: each edge's loss, jitter and RTCP RTT, and each stream's jitter-buffer statistics
/// ([`STREAM_FIELDS`]), labelled `session`, `edge` (`quic` or `rtp_udp`) and, for streams, `source` (the media
/// source id; the SSRC on the RTP/UDP edge). Read from the statistics the workers publish once a second.
fn sessions(out: &mut Out, engine: &Engine) {
    let entries = engine.sessions();
    // (session, edge, edge statistics, streams) of every session, copied out of the locks once.
    let mut edges: Vec<(String, &str, Value)> = Vec::new();
    let mut streams: Vec<(String, &str, Value)> = Vec::new();
    for entry in &entries {
        let id = entry.id.to_string();
        entry.live.with_stats(|stats| {
            if stats.get("network").is_some_and(Value::is_object) {
                edges.push((id.clone(), "quic", stats["network"].clone()));
            }
            // The packet edge: RTP/UDP, or a WebRTC peer (published under its own member).
            for (member, edge) in [("rtpUdp", "rtp_udp"), ("webrtc", "webrtc")] {
                if stats.get(member).is_some_and(Value::is_object) {
                    edges.push((id.clone(), edge, stats[member].clone()));
                    if stats[member]["stream"].is_object() {
                        streams.push((id.clone(), edge, stats[member]["stream"].clone()));
                    }
                }
            }
            for stream in stats["streams"].as_array().into_iter().flatten() {
                streams.push((id.clone(), "quic", stream.clone()));
            }
        });
    }
    for (member, name, counter, help) in EDGE_FIELDS {
        let kind = if *counter { "counter" } else { "gauge" };
        let _ = writeln!(out.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (session, edge, stats) in &edges {
            let value = stats[*member].as_u64().unwrap_or(0);
            let _ = writeln!(
                out.0,
                "{name}{{session=\"{session}\",edge=\"{edge}\"}} {value}"
            );
        }
    }
    for field in STREAM_FIELDS {
        let name = format!("mediaproc_stream_{}", field.metric);
        let kind = if field.counter { "counter" } else { "gauge" };
        let _ = writeln!(out.0, "# HELP {name} {}\n# TYPE {name} {kind}", field.help);
        for (session, edge, stream) in &streams {
            let source = stream["sourceId"].as_u64().unwrap_or(0);
            let value = stream[field.json].as_u64().unwrap_or(0);
            let _ = writeln!(
                out.0,
                "{name}{{session=\"{session}\",edge=\"{edge}\",source=\"{source}\"}} {value}"
            );
        }
    }
}
