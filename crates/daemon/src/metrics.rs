//! `/metrics`: Prometheus text exposition of the engine (sessions, load, drops, the QUIC endpoint) and of the
//! HTTP front (its counters are kept here, in [`HttpCounters`], so this module needs nothing above the engine).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Engine;
use crate::health::HealthStatus;
use crate::session::Dropped;

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
}

/// Renders the daemon's metrics.
pub fn render(engine: &Engine, http: &HttpCounters) -> String {
    let mut out = Out(String::with_capacity(4096));
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
    out.counter(
        "mediaproc_late_ticks_total",
        "Media ticks run more than a frame late.",
        load.late_ticks().iter().sum(),
    );

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

    // The QUIC media endpoint. (Counters the network layer adds — packet-ring overflow, strict-RTP drops,
    // refused attaches closing a connection — belong in this block.)
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
    out.0
}
