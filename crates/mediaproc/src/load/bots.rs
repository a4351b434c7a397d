//! `--bot websocket`: an out-of-process echo bot per call over the bot WebSocket (docs/bot-protocol.md), driven by
//! this tool — what a bot written in any language costs the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Counters of the tool's WebSocket bots.
#[derive(Debug, Default)]
pub struct BotCounters {
    /// Bots connected.
    pub connected: AtomicU64,
    /// Audio frames sent back to the daemon.
    pub echoed: AtomicU64,
    /// Bots whose connection failed or ended early.
    pub failed: AtomicU64,
}

/// Connects one echo bot to `media_url` with `bot_token` and sends every audio frame back until the socket
/// closes. Returns once connected; the echo runs on a task.
pub async fn connect_echo(
    media_url: &str,
    bot_token: &str,
    counters: Arc<BotCounters>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let url = format!("{media_url}?token={bot_token}");
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|err| format!("bot WebSocket {media_url}: {err}"))?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    Ok(tokio::spawn(async move {
        let (mut tx, mut rx) = socket.split();
        while let Some(message) = rx.next().await {
            match message {
                Ok(Message::Binary(audio)) => {
                    if tx.send(Message::Binary(audio)).await.is_err() {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    counters.echoed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Message::Close(_)) => return,
                // Events (text) are not needed; pings are answered by tungstenite while we read.
                Ok(_) => {}
                Err(_) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }))
}
