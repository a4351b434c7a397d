//! One edge connection: the task that owns it, attach/detach, and the hand-over of a session between
//! connections.
//!
//! The task's loop serves, in priority order: commands from other connections and the server (release or
//! end a session), its own transmit wake-up, the control stream (accepting it, then reading it), the
//! attach deadline, the fallback tick (drain, RTT, RTCP), and last the datagrams — so a continuous stream of
//! datagrams cannot starve the rest. Nothing in the loop awaits the network for long: control messages go
//! to the connection's writer task ([`super::control_stream::ControlWriter`]), and the only other await (asking
//! another connection to release a session) is bounded by [`RELEASE_TIMEOUT`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mediaproc_wire::control::{self, ControlMessage, FlowDecl, error_code};
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::control_stream::ControlWriter;
use super::{
    ARENA_LEN, CLOSE_ATTACH_DEADLINE, CLOSE_REFUSED_ATTACHES, ConnCommand, ConnEntry, Entry,
    NetPorts, SessionEvent, SessionWake, Shared, emit,
};
use crate::ring::MAX_PACKET_LEN;
use crate::rtcp::StreamRtcp;
use crate::stats::{EndpointStats, SessionStats, add, inc};

/// How long an attach waits for another connection to hand the session over.
pub(crate) const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// A session attached on this connection.
pub(super) struct Attached {
    pub(super) id: Uuid,
    pub(super) ports: NetPorts,
    pub(super) stats: Arc<SessionStats>,
    pub(super) events: mpsc::Sender<SessionEvent>,
    pub(super) wake: Arc<SessionWake>,
    pub(super) render_contexts: Vec<Uuid>,
    pub(super) source_contexts: Vec<Uuid>,
    pub(super) flows: Vec<u64>,
}

/// A flow of an attached session.
pub(super) struct Route {
    pub(super) slot: usize,
    pub(super) decl: FlowDecl,
    pub(super) rtcp: StreamRtcp,
}

/// Everything one connection's task owns.
pub(super) struct Conn {
    pub(super) id: u64,
    /// This connection's wake-up slot.
    pub(super) wake_slot: usize,
    pub(super) cstats: Arc<EndpointStats>,
    pub(super) conn: quinn::Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) cmd_tx: mpsc::UnboundedSender<ConnCommand>,
    pub(super) sessions: Vec<Option<Attached>>,
    pub(super) flows: HashMap<u64, Route>,
    pub(super) writer: Option<ControlWriter>,
    pub(super) out: Vec<u8>,
    pub(super) arena: BytesMut,
    pub(super) scratch: Box<[u8]>,
    /// Attach refusals so far.
    pub(super) refused: u32,
    /// Why the connection must end (set by handlers; the loop closes and returns it).
    pub(super) close: Option<String>,
    /// Fires when the connection has had no attached session for the attach deadline.
    deadline: Pin<Box<tokio::time::Sleep>>,
    deadline_armed: bool,
}

/// Counts in the endpoint totals and in the connection's own counters.
pub(super) fn inc2(
    st: [&EndpointStats; 2],
    pick: fn(&EndpointStats) -> &std::sync::atomic::AtomicU64,
) {
    inc(pick(st[0]));
    inc(pick(st[1]));
}

pub(super) fn add2(
    st: [&EndpointStats; 2],
    pick: fn(&EndpointStats) -> &std::sync::atomic::AtomicU64,
    n: u64,
) {
    add(pick(st[0]), n);
    add(pick(st[1]), n);
}

/// Runs one edge connection (holding wake-up slot `wake_slot`) to its end; returns why it ended.
pub(super) async fn run(
    id: u64,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    wake_slot: usize,
) -> String {
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let cstats = Arc::new(EndpointStats::default());
    shared.conns().insert(
        id,
        ConnEntry {
            remote: conn.remote_address(),
            stats: cstats.clone(),
            conn: conn.clone(),
        },
    );
    let deadline = tokio::time::Instant::now() + shared.config.attach_deadline;
    let mut c = Conn {
        id,
        wake_slot,
        cstats,
        conn: conn.clone(),
        shared: shared.clone(),
        cmd_tx,
        sessions: Vec::new(),
        flows: HashMap::new(),
        writer: None,
        out: vec![0u8; control::MAX_FRAME_LEN],
        arena: BytesMut::with_capacity(ARENA_LEN),
        scratch: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
        refused: 0,
        close: None,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        deadline_armed: true,
    };
    let Some(notify) = shared.wake.notify(wake_slot) else {
        return "no wake-up slot".into();
    };
    let mut recv: Option<quinn::RecvStream> = None;
    let mut inbuf: Vec<u8> = Vec::with_capacity(2 * control::MAX_FRAME_LEN);
    let mut chunk = vec![0u8; control::MAX_FRAME_LEN];
    // The first poll one interval from now, not at once (`interval`'s first tick completes immediately): a loop still
    // busy with its first attach would otherwise flush on that tick whatever a session queued meanwhile, without
    // the session's waker — the race `a_session_waker_wakes_only_its_own_connection` lost now and then under load.
    let period = shared.config.tx_poll_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_rtcp = Instant::now();
    let reason = loop {
        if let Some(reason) = c.close.take() {
            break reason;
        }
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => {
                if let Some(cmd) = cmd {
                    c.on_command(cmd);
                }
            }
            () = notify.notified() => c.flush_tx(),
            s = conn.accept_bi(), if recv.is_none() => match s {
                Ok((send, r)) => {
                    c.writer = Some(ControlWriter::spawn(send, conn.clone(), shared.clone(), c.cstats.clone()));
                    recv = Some(r);
                }
                Err(e) => break e.to_string(),
            },
            r = async { match recv.as_mut() { Some(r) => r.read(&mut chunk).await, None => std::future::pending().await } } => {
                match r {
                    Ok(Some(n)) => {
                        inbuf.extend_from_slice(&chunk[..n]);
                        if let Err(reason) = c.on_control_bytes(&mut inbuf).await {
                            break reason;
                        }
                    }
                    Ok(None) => {
                        conn.close(VarInt::from_u32(super::CLOSE_NORMAL), b"control stream finished");
                        break "control stream finished".into();
                    }
                    Err(e) => break e.to_string(),
                }
            }
            () = c.deadline.as_mut(), if c.deadline_armed => {
                inc2([&shared.stats, &*c.cstats], |s| &s.closed_attach_deadline);
                if let Some(n) = Shared::log_hit(&shared.squatter_log) {
                    tracing::info!(
                        conn = id,
                        remote = %conn.remote_address(),
                        count = n,
                        "closed a connection with no session attached in time ({n} since the last report)"
                    );
                }
                conn.close(VarInt::from_u32(CLOSE_ATTACH_DEADLINE), b"no session attached in time");
                break "attach deadline".into();
            }
            _ = tick.tick() => {
                c.flush_tx();
                let rtt = conn.rtt().as_micros() as u64;
                for s in c.sessions.iter().flatten() {
                    s.stats.rtt_us.store(rtt, Ordering::Relaxed);
                }
                if last_rtcp.elapsed() >= shared.config.rtcp_interval {
                    last_rtcp = Instant::now();
                    c.send_rtcp();
                }
            }
            // Last: a continuous stream of datagrams must not starve the control stream or the tick.
            d = conn.read_datagram() => match d {
                Ok(d) => c.on_datagram(&d),
                Err(e) => break e.to_string(),
            },
        }
    };
    c.detach_all(error_code::NORMAL);
    // The writer finishes what is queued (an error before a close, bounded by the write timeout) and
    // ends when its queue closes.
    drop(c.writer.take());
    shared.conns().remove(&id);
    reason
}

impl Conn {
    pub(super) fn slot_of(&self, id: Uuid) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    }

    fn attached_count(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    /// (Re-)arms the attach deadline when the connection holds no session, disarms it when it holds one.
    fn update_deadline(&mut self) {
        let empty = self.attached_count() == 0;
        if empty && !self.deadline_armed {
            let at = tokio::time::Instant::now() + self.shared.config.attach_deadline;
            self.deadline.as_mut().reset(at);
            self.deadline_armed = true;
        } else if !empty {
            self.deadline_armed = false;
        }
    }

    pub(super) fn add_flow(&mut self, slot: usize, decl: FlowDecl) {
        self.flows.insert(
            decl.flow_id,
            Route {
                slot,
                decl,
                rtcp: StreamRtcp::new(super::clock_rate(decl.codec)),
            },
        );
        if let Some(s) = self.sessions[slot].as_mut() {
            s.flows.push(decl.flow_id);
        }
    }

    /// An attach was refused: counted, logged at most once a second, and after
    /// [`super::ServerConfig::max_refused_attaches`] of them the connection is closed.
    fn on_refused(&mut self, session_id: Uuid) {
        inc2([&self.shared.stats, &*self.cstats], |s| &s.refused);
        self.refused += 1;
        if let Some(n) = Shared::log_hit(&self.shared.refusal_log) {
            tracing::info!(
                conn = self.id,
                remote = %self.conn.remote_address(),
                count = n,
                "attach refused ({n} since the last report)"
            );
        }
        self.send_error(error_code::ATTACH_REFUSED, session_id, "attach refused");
        if self.refused >= self.shared.config.max_refused_attaches {
            inc2([&self.shared.stats, &*self.cstats], |s| {
                &s.closed_refused_attaches
            });
            if let Some(w) = &self.writer {
                w.close_soon(
                    self.conn.clone(),
                    CLOSE_REFUSED_ATTACHES,
                    "too many refused attaches",
                );
            } else {
                self.conn.close(
                    VarInt::from_u32(CLOSE_REFUSED_ATTACHES),
                    b"too many refused attaches",
                );
            }
            self.close
                .get_or_insert_with(|| "too many refused attaches".into());
        }
    }

    pub(super) async fn on_attach(&mut self, session_id: Uuid, token: &[u8], flows: Vec<FlowDecl>) {
        if self.slot_of(session_id).is_some() {
            inc2([&self.shared.stats, &*self.cstats], |s| &s.protocol_errors);
            self.send_error(
                error_code::PROTOCOL_VIOLATION,
                session_id,
                "session already attached on this connection",
            );
            return;
        }
        let attached_count = self.attached_count();
        // Authorize and validate under the registry lock; take the ports if they are free.
        enum Next {
            Refuse,
            Fail(u16, &'static str),
            Take(NetPorts, Taken),
            Release(mpsc::UnboundedSender<ConnCommand>),
        }
        let next = {
            let shared = self.shared.clone();
            let mut map = shared.lock();
            match map.get_mut(&session_id) {
                Some(e) if super::constant_time_eq(&e.token, token) => {
                    if attached_count >= self.shared.config.max_sessions_per_connection {
                        Next::Fail(
                            error_code::LIMIT_EXCEEDED,
                            "too many sessions on this connection",
                        )
                    } else if let Err((code, why)) =
                        self.check_flows_for(&e.render_contexts, &e.source_contexts, 0, &flows)
                    {
                        Next::Fail(code, why)
                    } else if let Some(ports) = e.ports.take() {
                        e.attached = Some((self.id, self.cmd_tx.clone()));
                        Next::Take(ports, Taken::of(e))
                    } else if let Some((_, cmd)) = &e.attached {
                        Next::Release(cmd.clone())
                    } else {
                        Next::Fail(error_code::INTERNAL, "session unavailable")
                    }
                }
                _ => Next::Refuse,
            }
        };
        let next = match next {
            Next::Release(cmd) => {
                // Another connection holds the session: ask it to let go (it sends Detach{REPLACED}). Its
                // loop never blocks on the network, so the answer comes at once unless it is ending — then
                // its ports come back to the registry when it has ended.
                let (reply_tx, reply_rx) = oneshot::channel();
                let _ = cmd.send(ConnCommand::Release {
                    session_id,
                    reply: reply_tx,
                });
                let ports = tokio::time::timeout(RELEASE_TIMEOUT, reply_rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                let shared = self.shared.clone();
                let mut map = shared.lock();
                match (map.get_mut(&session_id), ports) {
                    (Some(e), Some(ports)) => {
                        e.attached = Some((self.id, self.cmd_tx.clone()));
                        Next::Take(ports, Taken::of(e))
                    }
                    (Some(e), None) => match e.ports.take() {
                        Some(ports) => {
                            e.attached = Some((self.id, self.cmd_tx.clone()));
                            Next::Take(ports, Taken::of(e))
                        }
                        None => Next::Fail(error_code::INTERNAL, "session busy, retry"),
                    },
                    (None, _) => Next::Refuse,
                }
            }
            n => n,
        };
        match next {
            Next::Refuse => self.on_refused(session_id),
            Next::Fail(code, why) => self.send_error(code, session_id, why),
            Next::Take(ports, t) => {
                let slot = match self.sessions.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.sessions.push(None);
                        self.sessions.len() - 1
                    }
                };
                t.wake.attach(self.wake_slot);
                self.sessions[slot] = Some(Attached {
                    id: session_id,
                    ports,
                    stats: t.stats.clone(),
                    events: t.events.clone(),
                    wake: t.wake,
                    render_contexts: t.render_contexts,
                    source_contexts: t.source_contexts,
                    flows: Vec::with_capacity(flows.len()),
                });
                for f in &flows {
                    self.add_flow(slot, *f);
                }
                self.update_deadline();
                t.stats
                    .rtt_us
                    .store(self.conn.rtt().as_micros() as u64, Ordering::Relaxed);
                emit(
                    &t.events,
                    &t.stats,
                    SessionEvent::Attached {
                        remote: self.conn.remote_address(),
                        flows,
                    },
                );
                self.send_control(&ControlMessage::AttachOk { session_id });
            }
            Next::Release(_) => {}
        }
    }

    /// Removes the session in `slot` from this connection; returns it.
    fn take_session(&mut self, slot: usize) -> Option<Attached> {
        let sess = self.sessions.get_mut(slot)?.take()?;
        for f in &sess.flows {
            self.flows.remove(f);
        }
        sess.wake.detach(self.wake_slot);
        self.update_deadline();
        Some(sess)
    }

    /// Detaches the session in `slot` (edge asked, or connection ending): ports go back to the registry.
    pub(super) fn detach(&mut self, slot: usize, reason: u16) {
        let Some(sess) = self.take_session(slot) else {
            return;
        };
        emit(&sess.events, &sess.stats, SessionEvent::Detached { reason });
        let mut map = self.shared.lock();
        if let Some(e) = map.get_mut(&sess.id) {
            if e.attached.as_ref().is_some_and(|(c, _)| *c == self.id) {
                e.attached = None;
            }
            e.ports = Some(sess.ports);
        }
    }

    fn detach_all(&mut self, reason: u16) {
        for slot in 0..self.sessions.len() {
            self.detach(slot, reason);
        }
    }

    fn on_command(&mut self, cmd: ConnCommand) {
        match cmd {
            ConnCommand::Release { session_id, reply } => {
                let ports = match self.slot_of(session_id).and_then(|s| self.take_session(s)) {
                    Some(sess) => {
                        emit(
                            &sess.events,
                            &sess.stats,
                            SessionEvent::Detached {
                                reason: error_code::REPLACED,
                            },
                        );
                        self.send_control(&ControlMessage::Detach {
                            session_id,
                            reason: error_code::REPLACED,
                        });
                        Some(sess.ports)
                    }
                    None => None,
                };
                if let Err(Some(ports)) = reply.send(ports) {
                    // The requester gave up waiting: keep the session reachable by parking its ports in the
                    // registry, where the next attach finds them.
                    let mut map = self.shared.lock();
                    if let Some(e) = map.get_mut(&session_id) {
                        e.attached = None;
                        e.ports = Some(ports);
                    }
                }
            }
            ConnCommand::End { session_id } => {
                if let Some(sess) = self.slot_of(session_id).and_then(|s| self.take_session(s)) {
                    emit(
                        &sess.events,
                        &sess.stats,
                        SessionEvent::Detached {
                            reason: error_code::SESSION_ENDED,
                        },
                    );
                    self.send_control(&ControlMessage::Detach {
                        session_id,
                        reason: error_code::SESSION_ENDED,
                    });
                }
            }
        }
    }
}

/// What an attach takes from the registry entry besides the ports.
struct Taken {
    render_contexts: Vec<Uuid>,
    source_contexts: Vec<Uuid>,
    stats: Arc<SessionStats>,
    events: mpsc::Sender<SessionEvent>,
    wake: Arc<SessionWake>,
}

impl Taken {
    fn of(e: &Entry) -> Self {
        Self {
            render_contexts: e.render_contexts.clone(),
            source_contexts: e.source_contexts.clone(),
            stats: e.stats.clone(),
            events: e.events.clone(),
            wake: e.wake.clone(),
        }
    }
}
