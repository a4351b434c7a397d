//! `mediaproc serve`: configuration from file, environment and flags, then the daemon until SIGTERM or Ctrl-C.

use mediaproc_daemon::Config;

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mediaproc-net")
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))?;
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
        shutdown_signal().await;
        tracing::info!("shutting down: ending calls");
        daemon.shutdown().await;
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
