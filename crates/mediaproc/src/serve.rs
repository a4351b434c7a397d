//! `mediaproc serve`: configuration from file, environment and flags, then the daemon until SIGTERM or Ctrl-C.
//!
//! On a fleet node (`--fleet redis://…`) SIGTERM drains: no new session, the calls go on, the process exits when
//! the last ends or at `--drain-deadline` (a second SIGTERM or Ctrl-C ends the calls at once). A drain started
//! with `mediaproc drain` ends the process the same way, fleet or not.

use std::time::Duration;

use mediaproc_daemon::Config;
use mediaproc_daemon::config::WhenUnreachable;

use crate::{Failure, ServeArgs, output};

pub fn run(args: &ServeArgs) -> Result<(), Failure> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|err| Failure::usage(err.to_string()))?,
        None => Config::default(),
    };
    config.apply_env(|name| std::env::var(name).ok());
    if let Some(api) = args.api {
        config.api = api;
    }
    if let Some(media) = args.media {
        config.media = media;
    }
    if let Some(host) = &args.public_host {
        config.public_host.clone_from(host);
    }
    if args.cert.is_some() {
        config.cert.clone_from(&args.cert);
    }
    if args.key.is_some() {
        config.key.clone_from(&args.key);
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(dir) = &args.recordings {
        config.recordings_dir.clone_from(dir);
    }
    args.fleet.apply(&mut config);
    config
        .validate()
        .map_err(|err| Failure::usage(err.to_string()))?;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Once, on one line: what the media endpoint will hold at most. (An RTP/UDP edge bound to a non-loopback
    // address is reported by the network layer itself, once per process, when the first one binds.)
    tracing::info!("media limits: {}", config.media_limits_line());
    // The network threads (the edges, and also the HTTP API) at the media priority, but never a real-time class.
    let priority = config.media_priority;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mediaproc-net")
        .on_thread_start(move || {
            let _ = mediaproc_daemon::priority::apply_to_current_thread(priority, false);
        })
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
    let config_is_fleet = config.fleet.redis.is_some();
    let drain_deadline = Duration::from_secs(config.fleet.drain_deadline_s);
    runtime.block_on(async move {
        let daemon = mediaproc_daemon::start(config)
            .await
            .map_err(|err| Failure::invalid(err.to_string()))?;
        if daemon.token_generated {
            output::line(&format!(
                "api token (set MEDIAPROC_API_TOKEN to choose one): {}",
                daemon.api_token
            ));
        }
        output::line(&format!("control API   http://{}", daemon.api_addr));
        output::line(&format!("mpUri         {}", daemon.mp_uri));
        if let Some(url) = daemon.talk_url() {
            output::line(&format!("talk page     {url}"));
        }
        output::line(&format!(
            "certificate   sha256 {}",
            daemon.certificate_sha256
        ));
        if let Some(node) = daemon.fleet_node_id() {
            output::line(&format!("fleet node    {node}"));
        }
        let drain_on_sigterm = config_is_fleet;
        // What the bots of the calls still running hear in their `stop`.
        let mut reason = "the media processor is shutting down";
        tokio::select! {
            () = shutdown_signal() => {
                if drain_on_sigterm {
                    daemon.drain(drain_deadline);
                    tokio::select! {
                        left = daemon.drained() => reason = log_drained(left),
                        () = shutdown_signal() => tracing::info!("second signal: ending the calls now"),
                    }
                }
            }
            left = daemon.drained() => reason = log_drained(left),
        }
        tracing::info!("shutting down: ending calls");
        daemon.shutdown_because(reason).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Logs a completed drain; returns the `stop` reason for the calls it left.
fn log_drained(left: usize) -> &'static str {
    // The drain itself said why (the last call ended, or the deadline with how many were left).
    tracing::info!(calls_left = left, "drain complete: exiting");
    "the node's drain deadline passed"
}

/// `serve`'s fleet flags (they override `[fleet]` in the file).
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Join the fleet on this registry (`redis://host:6379/0`); the secret comes from MEDIAPROC_FLEET_SECRET.
    #[arg(long, value_name = "URL")]
    fleet: Option<String>,
    /// This node's id in the fleet [default: $HOSTNAME, else random].
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Calls this node may carry [default: max_sessions].
    #[arg(long, value_name = "N")]
    capacity: Option<usize>,
    /// This node's control API as other nodes and bots reach it (`http://10.0.0.7:8080`).
    #[arg(long, value_name = "URL")]
    advertise_api: Option<String>,
    /// While the registry is unreachable: place `local`ly or `refuse` [default: local].
    #[arg(long, value_name = "WHAT", value_parser = ["local", "refuse"])]
    when_unreachable: Option<String>,
    /// Deadline of the drain SIGTERM starts, in seconds [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    drain_deadline: Option<u64>,
    /// Sessions this daemon accepts at most [default: 1000].
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
}

impl FleetArgs {
    fn apply(&self, config: &mut Config) {
        let fleet = &mut config.fleet;
        if self.fleet.is_some() {
            fleet.redis.clone_from(&self.fleet);
        }
        if self.node_id.is_some() {
            fleet.node_id.clone_from(&self.node_id);
        }
        if let Some(capacity) = self.capacity {
            fleet.capacity = capacity;
        }
        if self.advertise_api.is_some() {
            fleet.api_url.clone_from(&self.advertise_api);
        }
        match self.when_unreachable.as_deref() {
            Some("refuse") => fleet.when_unreachable = WhenUnreachable::Refuse,
            Some("local") => fleet.when_unreachable = WhenUnreachable::Local,
            _ => {}
        }
        if let Some(deadline) = self.drain_deadline {
            fleet.drain_deadline_s = deadline;
        }
        if let Some(max) = self.max_sessions {
            config.max_sessions = max;
        }
    }
}
