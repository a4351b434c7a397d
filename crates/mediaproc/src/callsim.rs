//! `mediaproc callsim`: the emulated Graph calls endpoint (and its media edge) as a standalone server.

use std::time::Duration;

use mediaproc_callsim::edge::EdgeOptions;
use mediaproc_callsim::graph::{self, GraphConfig};
use mediaproc_net::{ServerTrust, parse_fingerprint};

use crate::{CallsimArgs, Failure, output};

/// Environment variable holding the emulator's bearer token.
pub const ENV_GRAPH_TOKEN: &str = "MEDIAPROC_GRAPH_TOKEN";

pub fn run(args: &CallsimArgs) -> Result<(), Failure> {
    let token = args
        .token
        .clone()
        .or_else(|| {
            std::env::var(ENV_GRAPH_TOKEN)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .ok_or_else(|| {
            Failure::usage(format!(
                "give the bearer token with --token or {ENV_GRAPH_TOKEN}"
            ))
        })?;
    let edge = match &args.pin {
        Some(pin) => {
            let fingerprint = parse_fingerprint(pin).ok_or_else(|| {
                Failure::usage("--pin: expected the SHA-256 fingerprint `mediaproc serve` prints")
            })?;
            let mut edge = EdgeOptions::new(
                ServerTrust::PinnedSha256(fingerprint),
                Duration::from_secs(args.seconds),
            );
            edge.participants = args.participants;
            edge.loss = args.loss;
            edge.jitter = Duration::from_millis(args.jitter_ms);
            edge.drift_ppm = args.drift_ppm;
            edge.recordings = crate::demo::load_recordings(&args.wav)?;
            Some(edge)
        }
        None => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(async move {
        let media = edge.is_some();
        let mut config = GraphConfig::new(args.graph, token, edge);
        config.lobby_delay = Duration::from_millis(args.lobby_ms);
        let graph = graph::start(config).await.map_err(|err| Failure::invalid(err.to_string()))?;
        output::line(&format!("graph         http://{}/v1.0/app/calls and /beta/app/calls", graph.addr));
        if media {
            output::line("media edge    on: app-hosted calls get participants over QUIC at their mpUri");
        } else {
            output::line("media edge    off (give --pin with the daemon's certificate fingerprint to turn it on)");
        }
        let _ = tokio::signal::ctrl_c().await;
        graph.stop();
        Ok(())
    })
}
