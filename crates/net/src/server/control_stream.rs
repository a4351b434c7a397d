//! The control stream: decoding and handling the edge's messages, and the connection's writer.
//!
//! Replies never block the connection's loop: [`Conn::send_control`] encodes the message and queues it for
//! the connection's [`ControlWriter`], a separate task that owns the send half of the stream. The queue is
//! bounded ([`super::ServerConfig::control_queue_capacity`]) and every write has a timeout
//! ([`super::ServerConfig::control_write_timeout`]); a peer that lets the queue fill or a write time out has
//! stopped reading its control stream, and its connection is closed with [`CLOSE_CONTROL_STALLED`] (counted
//! in `closed_control_stalled`), which ends the connection's task and releases its sessions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mediaproc_wire::control::{self, ControlMessage, Decoded, Direction, FlowDecl, error_code};
use quinn::VarInt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::connection::{Conn, inc2};
use super::{
    CLOSE_CONTROL_STALLED, CLOSE_PROTOCOL_VIOLATION, CLOSE_UNSUPPORTED_VERSION, SessionEvent,
    Shared, emit,
};
use crate::stats::EndpointStats;

/// How long the writer waits for the peer to take the last frames before it closes the connection.
const CLOSE_LINGER: Duration = Duration::from_millis(200);

enum Out {
    Frame(Bytes),
    /// Finish the stream once the frames before it are written, then close the connection.
    Close(quinn::Connection, u32, &'static str),
}

/// The sending side of a connection's control stream: a bounded queue and the task that writes it.
pub(super) struct ControlWriter {
    queue: mpsc::Sender<Out>,
}

impl ControlWriter {
    /// Starts the writer for `send`.
    pub(super) fn spawn(
        send: quinn::SendStream,
        conn: quinn::Connection,
        shared: Arc<Shared>,
        cstats: Arc<EndpointStats>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(shared.config.control_queue_capacity.max(1));
        tokio::spawn(write_loop(send, rx, conn, shared, cstats));
        Self { queue }
    }

    /// Queues a frame; false when the queue is full (the peer is not reading) or the writer ended.
    fn push(&self, frame: Bytes) -> bool {
        self.queue.try_send(Out::Frame(frame)).is_ok()
    }

    /// Closes the connection with `code` after the frames queued so far are written.
    pub(super) fn close_soon(&self, conn: quinn::Connection, code: u32, reason: &'static str) {
        // A full queue (or a writer gone) cannot take the marker: close at once.
        if let Err(
            mpsc::error::TrySendError::Full(Out::Close(conn, code, reason))
            | mpsc::error::TrySendError::Closed(Out::Close(conn, code, reason)),
        ) = self.queue.try_send(Out::Close(conn, code, reason))
        {
            conn.close(VarInt::from_u32(code), reason.as_bytes());
        }
    }
}

async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Out>,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    cstats: Arc<EndpointStats>,
) {
    let timeout = shared.config.control_write_timeout;
    while let Some(out) = rx.recv().await {
        match out {
            Out::Frame(frame) => {
                match tokio::time::timeout(timeout, send.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    // The stream or connection is gone; the connection's task sees it too.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        stalled(&shared, &cstats, &conn, "control write timed out");
                        return;
                    }
                }
            }
            Out::Close(conn, code, reason) => {
                let _ = send.finish();
                let _ = tokio::time::timeout(CLOSE_LINGER, send.stopped()).await;
                conn.close(VarInt::from_u32(code), reason.as_bytes());
                return;
            }
        }
    }
}

/// The peer stopped reading its control stream: count and close (its sessions are released when the
/// connection's task sees the close).
fn stalled(shared: &Shared, cstats: &EndpointStats, conn: &quinn::Connection, why: &'static str) {
    inc2([&shared.stats, cstats], |s| &s.closed_control_stalled);
    if let Some(n) = Shared::log_hit(&shared.stall_log) {
        tracing::info!(
            remote = %conn.remote_address(),
            count = n,
            "{why}: closing the connection ({n} since the last report)"
        );
    }
    conn.close(VarInt::from_u32(CLOSE_CONTROL_STALLED), why.as_bytes());
}

impl Conn {
    /// Encodes and queues a control message for the writer; never waits. A full queue closes the
    /// connection as stalled.
    pub(super) fn send_control(&mut self, msg: &ControlMessage) {
        let Ok(n) = msg.encode(&mut self.out) else {
            return;
        };
        let Some(w) = &self.writer else {
            return;
        };
        if !w.push(Bytes::copy_from_slice(&self.out[..n])) && self.close.is_none() {
            stalled(
                &self.shared,
                &self.cstats,
                &self.conn,
                "control send queue full",
            );
            self.close = Some("control send queue full".into());
        }
    }

    pub(super) fn send_error(&mut self, code: u16, session_id: Uuid, message: &str) {
        self.send_control(&ControlMessage::Error {
            code,
            session_id,
            message: message.to_owned(),
        });
    }

    /// Handles complete frames in `inbuf`; `Err` carries the reason to close the connection.
    pub(super) async fn on_control_bytes(&mut self, inbuf: &mut Vec<u8>) -> Result<(), String> {
        loop {
            match control::decode_frame(inbuf) {
                Ok(Decoded::Incomplete { .. }) => return Ok(()),
                Ok(Decoded::Message(msg, len)) => {
                    inbuf.drain(..len);
                    self.on_control(msg).await;
                    if self.close.is_some() {
                        return Ok(());
                    }
                }
                Ok(Decoded::Unknown { msg_type, len }) => {
                    inbuf.drain(..len);
                    if msg_type < control::FIRST_IGNORABLE_TYPE {
                        inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                        self.send_error(
                            error_code::UNKNOWN_MESSAGE,
                            Uuid::nil(),
                            "unknown message type",
                        );
                    }
                }
                Err(e) => {
                    inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                    let (code, close) = match e {
                        mediaproc_wire::WireError::UnsupportedVersion { .. } => {
                            (error_code::UNSUPPORTED_VERSION, CLOSE_UNSUPPORTED_VERSION)
                        }
                        _ => (error_code::PROTOCOL_VIOLATION, CLOSE_PROTOCOL_VIOLATION),
                    };
                    let text = e.to_string();
                    // Cut at a character boundary: slicing inside a UTF-8 sequence would panic.
                    let mut end = text.len().min(control::MAX_ERROR_TEXT_LEN);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    let text = &text[..end];
                    self.send_error(code, Uuid::nil(), text);
                    // The writer sends the error, finishes the stream and then closes the connection.
                    match &self.writer {
                        Some(w) => w.close_soon(self.conn.clone(), close, "protocol error"),
                        None => self.conn.close(VarInt::from_u32(close), b"protocol error"),
                    }
                    return Err(format!("protocol error: {e}"));
                }
            }
        }
    }

    async fn on_control(&mut self, msg: ControlMessage) {
        match msg {
            ControlMessage::Attach {
                session_id,
                token,
                flows,
            } => self.on_attach(session_id, &token, flows).await,
            ControlMessage::KeepAlive { nonce } => {
                self.send_control(&ControlMessage::KeepAliveAck { nonce })
            }
            ControlMessage::KeepAliveAck { .. } => {}
            ControlMessage::Error { code, message, .. } => {
                tracing::debug!(conn = self.id, code, %message, "edge reported an error");
            }
            ControlMessage::AttachOk { session_id } => {
                inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                self.send_error(
                    error_code::PROTOCOL_VIOLATION,
                    session_id,
                    "AttachOk is sent by the MP only",
                );
            }
            other => {
                let Some(session_id) = other.session_id() else {
                    return;
                };
                let Some(slot) = self.slot_of(session_id) else {
                    inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
                    self.send_error(
                        error_code::NOT_ATTACHED,
                        session_id,
                        "session not attached on this connection",
                    );
                    return;
                };
                self.on_session_message(slot, other);
            }
        }
    }

    fn on_session_message(&mut self, slot: usize, msg: ControlMessage) {
        let Some(sess) = self.sessions[slot].as_ref() else {
            return;
        };
        let (events, stats, sid) = (sess.events.clone(), sess.stats.clone(), sess.id);
        match msg {
            ControlMessage::Detach { .. } => {
                self.detach(slot, error_code::NORMAL);
            }
            ControlMessage::OpenFlow { flow, .. } => {
                if let Err(why) = self.check_flows(slot, std::slice::from_ref(&flow)) {
                    self.send_error(why.0, sid, why.1);
                    return;
                }
                self.add_flow(slot, flow);
                emit(&events, &stats, SessionEvent::FlowOpened(flow));
            }
            ControlMessage::CloseFlow { flow_id, .. } => {
                let owned = self.flows.get(&flow_id).is_some_and(|r| r.slot == slot);
                if !owned {
                    self.send_error(error_code::INVALID_FLOW, sid, "flow not open");
                    return;
                }
                self.flows.remove(&flow_id);
                if let Some(s) = self.sessions[slot].as_mut() {
                    s.flows.retain(|f| *f != flow_id);
                }
                emit(&events, &stats, SessionEvent::FlowClosed { flow_id });
            }
            ControlMessage::Roster { participants, .. } => {
                emit(&events, &stats, SessionEvent::Roster(participants))
            }
            ControlMessage::DominantSpeaker { msi, .. } => {
                emit(&events, &stats, SessionEvent::DominantSpeaker { msi });
            }
            ControlMessage::Dtmf {
                event, duration_ms, ..
            } => {
                emit(&events, &stats, SessionEvent::Dtmf { event, duration_ms });
            }
            ControlMessage::SendStatus {
                context, active, ..
            } => {
                emit(
                    &events,
                    &stats,
                    SessionEvent::SendStatus { context, active },
                );
            }
            _ => {}
        }
    }

    /// Validates flow declarations for the session in `slot` (or about to be attached with these contexts).
    fn check_flows(&self, slot: usize, flows: &[FlowDecl]) -> Result<(), (u16, &'static str)> {
        let Some(sess) = self.sessions.get(slot).and_then(Option::as_ref) else {
            return Err((
                error_code::NOT_ATTACHED,
                "session not attached on this connection",
            ));
        };
        self.check_flows_for(
            &sess.render_contexts,
            &sess.source_contexts,
            sess.flows.len(),
            flows,
        )
    }

    pub(super) fn check_flows_for(
        &self,
        render: &[Uuid],
        source: &[Uuid],
        existing: usize,
        flows: &[FlowDecl],
    ) -> Result<(), (u16, &'static str)> {
        if existing + flows.len() > self.shared.config.max_flows_per_session {
            return Err((error_code::LIMIT_EXCEEDED, "too many flows in the session"));
        }
        for (i, f) in flows.iter().enumerate() {
            if self.flows.contains_key(&f.flow_id)
                || flows[..i].iter().any(|g| g.flow_id == f.flow_id)
            {
                return Err((
                    error_code::INVALID_FLOW,
                    "flow id already in use on this connection",
                ));
            }
            let allowed = match f.direction {
                Direction::Render => render,
                Direction::Source => source,
            };
            if !allowed.is_empty() && !allowed.contains(&f.context) {
                return Err((
                    error_code::INVALID_FLOW,
                    "context is not one of the session's",
                ));
            }
            if (64..=95).contains(&f.payload_type) {
                return Err((
                    error_code::INVALID_FLOW,
                    "payload types 64-95 collide with RTCP",
                ));
            }
        }
        Ok(())
    }
}
