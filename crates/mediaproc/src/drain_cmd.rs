//! `mediaproc drain` / `undrain`: ask a running daemon (its control API, with `MEDIAPROC_API_TOKEN`) to drain or to
//! take sessions again. `drain --wait` returns when the daemon has exited (Kubernetes' `preStop` runs it, so the
//! pod's SIGTERM comes only after the last call).

use std::time::{Duration, Instant};

use crate::{Failure, output};

/// How often `drain --wait` looks whether the daemon is still there.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Flags of `mediaproc drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The daemon's control API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// End the calls left after this many seconds [default: the daemon's `fleet.drain_deadline_s`].
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<u64>,
    /// Return only once the daemon has exited.
    #[arg(long)]
    wait: bool,
}

/// Flags of `mediaproc undrain`.
#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// The daemon's control API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    api: String,
}

fn token() -> Result<String, Failure> {
    std::env::var(mediaproc_daemon::config::ENV_API_TOKEN)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Failure::usage(format!(
                "set {} to the daemon's API token",
                mediaproc_daemon::config::ENV_API_TOKEN
            ))
        })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::invalid(format!("cannot start the runtime: {err}")))
}

async fn post(
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, Failure> {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|err| Failure::invalid(format!("{url}: {err}")))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Failure::invalid(format!("{url}: {status} {body}")));
    }
    Ok(body)
}

pub fn drain(args: &DrainArgs) -> Result<(), Failure> {
    let token = token()?;
    let api = args.api.trim_end_matches('/').to_owned();
    runtime()?.block_on(async {
        let body = match args.deadline {
            Some(seconds) => serde_json::json!({"deadlineSeconds": seconds}),
            None => serde_json::json!({}),
        };
        let answer = post(&format!("{api}/v1/drain"), &token, body).await?;
        output::line(&format!(
            "draining: {} calls, deadline {} s",
            answer["sessions"], answer["deadlineSeconds"]
        ));
        if !args.wait {
            return Ok(());
        }
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|err| Failure::invalid(err.to_string()))?;
        // Until the API stops answering: the process exits once drained.
        while client
            .get(format!("{api}/health/live"))
            .send()
            .await
            .is_ok()
        {
            tokio::time::sleep(WAIT_POLL).await;
        }
        output::line(&format!(
            "drained: the daemon exited after {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    })
}

pub fn undrain(args: &UndrainArgs) -> Result<(), Failure> {
    let token = token()?;
    let api = args.api.trim_end_matches('/').to_owned();
    runtime()?.block_on(async {
        post(&format!("{api}/v1/undrain"), &token, serde_json::json!({})).await?;
        output::line("undrained: taking sessions again");
        Ok(())
    })
}
