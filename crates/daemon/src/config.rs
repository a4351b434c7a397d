//! Daemon configuration: TOML file, then environment, then command-line flags (the binary applies those).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::DaemonError;

/// Environment variable holding the control API's bearer token.
pub const ENV_API_TOKEN: &str = "MEDIAPROC_API_TOKEN";

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
    /// Worker load (share of the 20 ms tick spent working) from which `/healthz` says HeavilyLoaded.
    pub heavily_loaded_at: f64,
    /// Worker load from which `/healthz` says Overloaded and new sessions are refused with 503.
    pub overloaded_at: f64,
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
            heavily_loaded_at: 0.7,
            overloaded_at: 0.9,
        }
    }
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
    }

    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), DaemonError> {
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
        Ok(())
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
