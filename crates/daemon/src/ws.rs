//! The bot WebSocket: 20 ms PCM frames both ways as binary messages, JSON events and actions as text.
//! The protocol is specified in `docs/bot-protocol.md`.
//!
//! Nothing a bot does can hold the bridge or the session: every send is bounded by `ws_write_timeout_ms` (a bot
//! that stops reading is disconnected and counted as a stall) and abandoned at once when the session ends; the
//! bridge pings every `ws_ping_interval_ms` and disconnects a bot that has not answered within `ws_pong_timeout_ms`;
//! messages and frames from the bot are limited to `ws_max_message_bytes` (far below tungstenite's 16 MiB). The
//! session's audio is ticked by its media worker whatever the bridge does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use mediaproc_pipeline::{MarkName, ReceivedAudio, SampleRate};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::session::{BotEvent, BotPort, Dropped, LiveSession};

/// Magic of an unmixed-audio binary message: `b"UMX1"`, then the media source id (u32 LE), the frame's timestamp
/// in 100 ns ticks (u64 LE), then one frame of PCM.
pub const UNMIXED_MAGIC: &[u8; 4] = b"UMX1";
/// Bytes before the PCM in an unmixed-audio message.
pub const UNMIXED_HEADER_LEN: usize = 16;
/// Audio the bridge holds beyond the session's outbound queue before it stops reading the socket (2 s at 16 kHz):
/// a `clear` sent behind a burst is still read, and applied at once, while less than this is held.
pub const HELD_BYTES_LIMIT: usize = 64_000;
/// Marks held with audio not yet queued; more are refused with an error event.
pub const HELD_MARKS_LIMIT: usize = 64;

/// The bot's audio and marks not yet in the outbound queue, in the order the bot sent them.
struct Held {
    bytes: Vec<u8>,
    /// Bytes already moved to the queue (always whole frames).
    base: u64,
    /// Marks with the byte position (in the bot's stream) they follow.
    marks: VecDeque<(u64, MarkName)>,
}

impl Held {
    /// Moves whole frames (and the marks between them) into the outbound queue while it has room; tells the worker
    /// when it queued any (so an answer within the tick goes out at once).
    fn flush(&mut self, frame_bytes: usize, samples: &mut Vec<i16>, port: &mut BotPort) {
        let mut offset = 0;
        'frames: loop {
            while let Some((position, name)) = self.marks.front() {
                if *position > self.base + offset as u64 {
                    break;
                }
                // A due mark that the queue cannot take yet (too many pending) holds back the audio behind it.
                if port.endpoint.outbound.mark(name.as_str()).is_err() {
                    break 'frames;
                }
                self.marks.pop_front();
            }
            if self.bytes.len() - offset < frame_bytes {
                break;
            }
            samples.clear();
            samples.extend(
                self.bytes[offset..offset + frame_bytes]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
            if port.endpoint.outbound.push(samples).is_err() {
                break;
            }
            offset += frame_bytes;
        }
        self.bytes.drain(..offset);
        self.base += offset as u64;
        if offset > 0 {
            port.frames.answered();
        }
    }

    /// Places a mark behind everything the bot has sent (a partial frame counts as the frame it starts).
    fn mark(&mut self, name: MarkName, frame_bytes: usize) -> Result<(), &'static str> {
        if self.marks.len() >= HELD_MARKS_LIMIT {
            return Err("too many marks waiting behind queued audio");
        }
        let frames = self.bytes.len().div_ceil(frame_bytes) as u64;
        self.marks
            .push_back((self.base + frames * frame_bytes as u64, name));
        Ok(())
    }

    /// Discards held audio; returns the marks it discarded (they are reported as cleared).
    fn clear(&mut self) -> Vec<MarkName> {
        self.base += self.bytes.len() as u64;
        self.bytes.clear();
        self.marks.drain(..).map(|(_, name)| name).collect()
    }
}

/// The bridge's timeouts and sizes, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// A message the bot does not take within this is a stall: the bot is disconnected.
    pub write_timeout: Duration,
    /// How often the bridge pings.
    pub ping_interval: Duration,
    /// No pong this long after a ping disconnects the bot.
    pub pong_timeout: Duration,
    /// Largest message and frame taken from the bot.
    pub max_message_bytes: usize,
}

impl WsLimits {
    /// The limits a configuration sets.
    pub fn from_config(config: &Config) -> Self {
        WsLimits {
            write_timeout: Duration::from_millis(config.ws_write_timeout_ms),
            ping_interval: Duration::from_millis(config.ws_ping_interval_ms),
            pong_timeout: Duration::from_millis(config.ws_pong_timeout_ms),
            max_message_bytes: config.ws_max_message_bytes,
        }
    }
}

/// Why a bridge ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// The bot closed, or the socket failed.
    Closed,
    /// A send did not complete within the write timeout.
    Stalled,
    /// No pong within the pong timeout.
    PongTimeout,
    /// The session ended while a send was pending.
    Ended,
}

/// Sends one message, bounded by the write timeout, and abandoned at once if the session ends meanwhile (a bot
/// that stopped reading must not hold the bridge after `DELETE`).
async fn send(
    socket: &mut WebSocket,
    message: Message,
    limits: &WsLimits,
    ended: &mut watch::Receiver<bool>,
) -> Result<(), Gone> {
    tokio::select! {
        // A send that completes at once wins, so a healthy bot still gets what was due.
        biased;
        sent = tokio::time::timeout(limits.write_timeout, socket.send(message)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone::Closed),
            Err(_) => Err(Gone::Stalled),
        },
        _ = ended.wait_for(|ended| *ended) => Err(Gone::Ended),
    }
}

/// Serves one bot connection until it closes, stalls or stops answering pings; then the ring ends go back to the
/// session so the bot can reconnect. Every way out but the bot's own close is counted in the session's statistics.
pub async fn serve_bot(
    mut socket: WebSocket,
    port: BotPort,
    live: Arc<LiveSession>,
    session_id: String,
    call_id: String,
    rate: SampleRate,
    limits: WsLimits,
) {
    let (port, gone) = bridge(
        &mut socket,
        port,
        &live,
        &session_id,
        &call_id,
        rate,
        &limits,
    )
    .await;
    live.count(Dropped::WsDisconnect);
    match gone {
        Gone::Stalled => {
            live.count(Dropped::WsStall);
            live.notice(
                "botStalled",
                json!({"writeTimeoutMs": limits.write_timeout.as_millis() as u64}),
            );
            tracing::warn!(session = %session_id, "bot stopped reading; disconnected after the write timeout");
        }
        Gone::PongTimeout => {
            live.count(Dropped::WsPongTimeout);
            live.notice(
                "botPongTimeout",
                json!({"pongTimeoutMs": limits.pong_timeout.as_millis() as u64}),
            );
            tracing::warn!(session = %session_id, "bot answered no ping; disconnected");
        }
        Gone::Closed | Gone::Ended => {
            tracing::info!(session = %session_id, "bot disconnected; the call goes on and the bot may reconnect");
        }
    }
    // Dropping the socket closes the connection without waiting on a peer that may not read.
    drop(socket);
    live.return_bot_port(port);
}

async fn bridge(
    socket: &mut WebSocket,
    mut port: BotPort,
    live: &LiveSession,
    session_id: &str,
    call_id: &str,
    rate: SampleRate,
    limits: &WsLimits,
) -> (BotPort, Gone) {
    let mut ended = live.ended_signal();
    let samples = rate.samples_per_frame();
    let frame_bytes = samples * 2;
    let start = json!({
        "event": "start",
        "sessionId": session_id,
        "callId": call_id,
        "format": {"encoding": "audio/l16", "sampleRate": rate.hz(), "channels": 1, "frameBytes": frame_bytes, "frameMs": 20},
        "unmixed": {"magic": "UMX1", "headerBytes": UNMIXED_HEADER_LEN},
    });
    if let Err(gone) = send(
        socket,
        Message::Text(start.to_string().into()),
        limits,
        &mut ended,
    )
    .await
    {
        return (port, gone);
    }
    let mut frame = Box::new(ReceivedAudio::new(rate));
    let mut pcm_out = vec![0u8; frame_bytes];
    let mut unmixed_out = vec![0u8; UNMIXED_HEADER_LEN + frame_bytes];
    let mut samples_in: Vec<i16> = Vec::with_capacity(samples);
    let mut held = Held {
        bytes: Vec::with_capacity(HELD_BYTES_LIMIT + limits.max_message_bytes),
        base: 0,
        marks: VecDeque::new(),
    };
    // The worker raises this once the tick's frame is in the inbound ring: forwarded at once, no polling.
    let frames = port.frames.clone();
    let mut next_ping = Instant::now() + limits.ping_interval;
    let mut pong_due: Option<Instant> = None;
    let gone = 'session: loop {
        tokio::select! {
            () = frames.wait() => {
                held.flush(frame_bytes, &mut samples_in, &mut port);
                while port.endpoint.inbound.pop(&mut frame) {
                    for (chunk, sample) in pcm_out.chunks_exact_mut(2).zip(frame.mixed()) {
                        chunk.copy_from_slice(&sample.to_le_bytes());
                    }
                    if let Err(gone) = send(socket, Message::Binary(pcm_out.clone().into()), limits, &mut ended).await {
                        break 'session gone;
                    }
                    for i in 0..frame.unmixed_len() {
                        let Some((msi, speaker)) = frame.unmixed(i) else { continue };
                        unmixed_out[..4].copy_from_slice(UNMIXED_MAGIC);
                        unmixed_out[4..8].copy_from_slice(&msi.to_le_bytes());
                        unmixed_out[8..16].copy_from_slice(&frame.info.timestamp.to_le_bytes());
                        for (chunk, sample) in unmixed_out[UNMIXED_HEADER_LEN..].chunks_exact_mut(2).zip(speaker) {
                            chunk.copy_from_slice(&sample.to_le_bytes());
                        }
                        if let Err(gone) = send(socket, Message::Binary(unmixed_out.clone().into()), limits, &mut ended).await {
                            break 'session gone;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(pong_due.unwrap_or(next_ping)) => {
                let now = Instant::now();
                match pong_due {
                    // While the bridge holds back reading (backpressure) the pong cannot be read: not the bot's fault.
                    Some(_) if held.bytes.len() >= HELD_BYTES_LIMIT => pong_due = Some(now + limits.pong_timeout),
                    Some(_) => break 'session Gone::PongTimeout,
                    None => {
                        if let Err(gone) = send(socket, Message::Ping(Default::default()), limits, &mut ended).await {
                            break 'session gone;
                        }
                        pong_due = Some(now + limits.pong_timeout);
                        next_ping = now + limits.ping_interval;
                    }
                }
            }
            event = port.events.recv() => {
                let Some(event) = event else { break 'session Gone::Closed };
                let stop = matches!(event, BotEvent::Stop { .. });
                let text = Message::Text(event.to_json().to_string().into());
                if stop {
                    // The last word: bounded by the write timeout, not abandoned because the session just ended.
                    if tokio::time::timeout(limits.write_timeout, socket.send(text)).await.is_ok_and(|r| r.is_ok()) {
                        let _ = tokio::time::timeout(limits.write_timeout, socket.send(Message::Close(None))).await;
                    }
                    break 'session Gone::Ended;
                }
                if let Err(gone) = send(socket, text, limits, &mut ended).await {
                    break 'session gone;
                }
            }
            // Backpressure: past the limit the socket is not read until the outbound queue has room again.
            message = socket.recv(), if held.bytes.len() < HELD_BYTES_LIMIT => {
                let Some(Ok(message)) = message else { break 'session Gone::Closed };
                match message {
                    Message::Binary(bytes) => {
                        // Frames may arrive split or joined: queue whole frames in order, hold the rest.
                        held.bytes.extend_from_slice(&bytes);
                        held.flush(frame_bytes, &mut samples_in, &mut port);
                    }
                    Message::Text(text) => {
                        for reply in handle_action(&text, &mut port, &mut held, frame_bytes) {
                            if let Err(gone) = send(socket, Message::Text(reply.to_string().into()), limits, &mut ended).await {
                                break 'session gone;
                            }
                        }
                        held.flush(frame_bytes, &mut samples_in, &mut port);
                    }
                    Message::Close(_) => break 'session Gone::Closed,
                    // Only a pong shows the bot reads its socket (a bot may send audio and never read).
                    Message::Pong(_) => pong_due = None,
                    Message::Ping(_) => {}
                }
            }
        }
    };
    (port, gone)
}

fn error_event(code: &str, message: impl Into<String>) -> Value {
    json!({"event": "error", "code": code, "message": message.into()})
}

/// Handles a JSON action; returns events to send back (errors, marks discarded before they were queued).
fn handle_action(
    text: &str,
    port: &mut BotPort,
    held: &mut Held,
    frame_bytes: usize,
) -> Vec<Value> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => return vec![error_event("invalid_message", format!("not JSON: {err}"))],
    };
    match value.get("action").and_then(Value::as_str) {
        Some("clear") => {
            // Audio the bot sent before the clear is discarded wherever it is: held here or queued.
            let discarded = held.clear();
            port.endpoint.outbound.clear();
            discarded
                .iter()
                .map(|name| json!({"event": "mark", "name": name.as_str(), "cleared": true}))
                .collect()
        }
        Some("mark") => match value.get("name").and_then(Value::as_str) {
            Some(name) => match MarkName::new(name) {
                Ok(name) => held
                    .mark(name, frame_bytes)
                    .err()
                    .map(|why| error_event("mark_refused", why))
                    .into_iter()
                    .collect(),
                Err(err) => vec![error_event("mark_refused", err.to_string())],
            },
            None => vec![error_event(
                "invalid_message",
                "a mark needs a string `name`",
            )],
        },
        Some("dtmf") => vec![error_event(
            "not_supported",
            "sending DTMF to the call is not supported yet (receiving it is: `dtmf` events)",
        )],
        Some(other) => vec![error_event(
            "unknown_action",
            format!("`{other}` is not one of clear, mark, dtmf"),
        )],
        None => vec![error_event(
            "invalid_message",
            "a text message needs a string `action`",
        )],
    }
}
