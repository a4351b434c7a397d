//! `/metrics`: Prometheus text exposition.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::api::AppState;
use crate::health::HealthStatus;

/// Renders the daemon's metrics.
pub fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(2048);
    let sessions = state.all_sessions();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "mediaproc_sessions",
        "Media sessions held by the daemon.",
        sessions.len() as f64,
    );
    let status = state.load.status();
    gauge(
        "mediaproc_health_status",
        "0 Normal, 1 HeavilyLoaded, 2 Overloaded.",
        match status {
            HealthStatus::Normal => 0.0,
            HealthStatus::HeavilyLoaded => 1.0,
            HealthStatus::Overloaded => 2.0,
        },
    );
    let _ = writeln!(
        out,
        "# HELP mediaproc_worker_load Share of the 20 ms tick a media worker spends working."
    );
    let _ = writeln!(out, "# TYPE mediaproc_worker_load gauge");
    for (i, load) in state.load.loads().iter().enumerate() {
        let _ = writeln!(out, "mediaproc_worker_load{{worker=\"{i}\"}} {load}");
    }
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "mediaproc_sessions_created_total",
        "Sessions created.",
        state.counters.sessions_created.load(Ordering::Relaxed),
    );
    counter(
        "mediaproc_api_unauthorized_total",
        "Requests refused for a missing or wrong token.",
        state.counters.unauthorized.load(Ordering::Relaxed),
    );
    counter(
        "mediaproc_sessions_refused_overloaded_total",
        "Sessions refused because the workers were overloaded.",
        state.counters.refused_overloaded.load(Ordering::Relaxed),
    );
    counter(
        "mediaproc_late_ticks_total",
        "Media ticks run more than a frame late.",
        state.load.late_ticks().iter().sum(),
    );
    out
}
