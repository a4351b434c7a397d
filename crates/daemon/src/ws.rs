//! The bot WebSocket: 20 ms PCM frames both ways as binary messages, JSON events and actions as text.
//! The protocol is specified in `docs/bot-protocol.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use mediaproc_pipeline::{ReceivedAudio, SampleRate};
use serde_json::{Value, json};

use crate::engine::{BotPort, LiveSession};

/// Magic of an unmixed-audio binary message: `b"UMX1"`, then the media source id (u32 LE), the frame's timestamp
/// in 100 ns ticks (u64 LE), then one frame of PCM.
pub const UNMIXED_MAGIC: &[u8; 4] = b"UMX1";
/// Bytes before the PCM in an unmixed-audio message.
pub const UNMIXED_HEADER_LEN: usize = 16;
/// How often the bridge forwards frames from the inbound ring (half a frame keeps the added latency ≤ 10 ms).
pub const FORWARD_INTERVAL: Duration = Duration::from_millis(10);

/// Serves one bot connection until it closes; then the ring ends go back to the session so the bot can reconnect.
pub async fn serve_bot(
    mut socket: WebSocket,
    mut port: BotPort,
    live: Arc<LiveSession>,
    session_id: String,
    call_id: String,
    rate: SampleRate,
) {
    let samples = rate.samples_per_frame();
    let frame_bytes = samples * 2;
    let start = json!({
        "event": "start",
        "sessionId": session_id,
        "callId": call_id,
        "format": {"encoding": "audio/l16", "sampleRate": rate.hz(), "channels": 1, "frameBytes": frame_bytes, "frameMs": 20},
        "unmixed": {"magic": "UMX1", "headerBytes": UNMIXED_HEADER_LEN},
    });
    if socket
        .send(Message::Text(start.to_string().into()))
        .await
        .is_err()
    {
        live.return_bot_port(port);
        return;
    }
    let mut frame = Box::new(ReceivedAudio::new(rate));
    let mut pcm_out = vec![0u8; frame_bytes];
    let mut unmixed_out = vec![0u8; UNMIXED_HEADER_LEN + frame_bytes];
    let mut pending: Vec<i16> = Vec::with_capacity(samples);
    let mut incoming: Vec<i16> = Vec::with_capacity(samples);
    let mut tick = tokio::time::interval(FORWARD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut partial: Vec<u8> = Vec::with_capacity(frame_bytes);
    'session: loop {
        tokio::select! {
            _ = tick.tick() => {
                // Retry a frame the outbound queue had no room for (backpressure: the socket is not read meanwhile).
                if !pending.is_empty() && port.endpoint.outbound.push(&pending).is_ok() {
                    pending.clear();
                }
                while port.endpoint.inbound.pop(&mut frame) {
                    for (chunk, sample) in pcm_out.chunks_exact_mut(2).zip(frame.mixed()) {
                        chunk.copy_from_slice(&sample.to_le_bytes());
                    }
                    if socket.send(Message::Binary(pcm_out.clone().into())).await.is_err() {
                        break 'session;
                    }
                    for i in 0..frame.unmixed_len() {
                        let Some((msi, speaker)) = frame.unmixed(i) else { continue };
                        unmixed_out[..4].copy_from_slice(UNMIXED_MAGIC);
                        unmixed_out[4..8].copy_from_slice(&msi.to_le_bytes());
                        unmixed_out[8..16].copy_from_slice(&frame.info.timestamp.to_le_bytes());
                        for (chunk, sample) in unmixed_out[UNMIXED_HEADER_LEN..].chunks_exact_mut(2).zip(speaker) {
                            chunk.copy_from_slice(&sample.to_le_bytes());
                        }
                        if socket.send(Message::Binary(unmixed_out.clone().into())).await.is_err() {
                            break 'session;
                        }
                    }
                }
            }
            event = port.events.recv() => {
                let Some(event) = event else { break 'session };
                let stop = matches!(event, crate::bots::BotEvent::Stop { .. });
                if socket.send(Message::Text(event.to_json().to_string().into())).await.is_err() || stop {
                    break 'session;
                }
            }
            message = socket.recv(), if pending.is_empty() => {
                let Some(Ok(message)) = message else { break 'session };
                match message {
                    Message::Binary(bytes) => {
                        // Frames may arrive split or joined; queue whole frames, keep the remainder.
                        partial.extend_from_slice(&bytes);
                        let whole = partial.len() / frame_bytes * frame_bytes;
                        for chunk in partial[..whole].chunks_exact(frame_bytes) {
                            incoming.clear();
                            incoming.extend(chunk.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                            if !pending.is_empty() || port.endpoint.outbound.push(&incoming).is_err() {
                                // Full: hold this frame; the rest of the message waits in `partial`.
                                if pending.is_empty() {
                                    pending.extend_from_slice(&incoming);
                                }
                            }
                        }
                        partial.drain(..whole);
                    }
                    Message::Text(text) => {
                        if let Some(reply) = handle_action(&text, &mut port) {
                            if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break 'session;
                            }
                        }
                    }
                    Message::Close(_) => break 'session,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    }
    tracing::info!(session = %session_id, "bot disconnected; the call goes on and the bot may reconnect");
    live.return_bot_port(port);
}

fn error_event(code: &str, message: impl Into<String>) -> Value {
    json!({"event": "error", "code": code, "message": message.into()})
}

/// Handles a JSON action; returns an event to send back (errors), if any.
fn handle_action(text: &str, port: &mut BotPort) -> Option<Value> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => return Some(error_event("invalid_message", format!("not JSON: {err}"))),
    };
    let action = value.get("action").and_then(Value::as_str);
    match action {
        Some("clear") => {
            port.endpoint.outbound.clear();
            None
        }
        Some("mark") => match value.get("name").and_then(Value::as_str) {
            Some(name) => port
                .endpoint
                .outbound
                .mark(name)
                .err()
                .map(|err| error_event("mark_refused", err.to_string())),
            None => Some(error_event(
                "invalid_message",
                "a mark needs a string `name`",
            )),
        },
        Some("dtmf") => Some(error_event(
            "not_supported",
            "sending DTMF to the call is not supported yet (receiving it is: `dtmf` events)",
        )),
        Some(other) => Some(error_event(
            "unknown_action",
            format!("`{other}` is not one of clear, mark, dtmf"),
        )),
        None => Some(error_event(
            "invalid_message",
            "a text message needs a string `action`",
        )),
    }
}
