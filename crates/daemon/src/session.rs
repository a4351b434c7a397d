//! Live session state: what the media worker, the bots, the WebSocket bridge and the control API share about one
//! session, and the daemon-wide drop counters.
//!
//! This module sits below everything that touches a session (bots, worker, bridge, engine, API), so none of those
//! needs to import another to reach the session: the worker publishes statistics and the roster here, bots and
//! the bridge take the [`BotPort`] and count what they drop, the engine asks the worker to end the session, and the
//! API reads it all. Counters are atomics bumped off the frame path; text (statistics, roster, notices) sits behind
//! short mutexes written at most once a second or on change.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mediaproc_pipeline::BotEndpoint;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// Notices (rotations, caps, disconnects) a session keeps for `GET /v1/sessions/{id}`; older ones are dropped
/// and counted.
pub const NOTICE_CAPACITY: usize = 32;

/// What the bot side of a session takes when the bot connects (or starts).
#[derive(Debug)]
pub struct BotPort {
    /// Ring ends.
    pub endpoint: BotEndpoint,
    /// Events from the worker.
    pub events: mpsc::Receiver<BotEvent>,
    /// Raised by the worker each tick, once the frame for the bot is in the inbound ring.
    pub frames: Arc<FrameSignal>,
}

/// "A tick's frame is in the inbound ring": the worker raises it without a lock (an atomic flag and an atomic
/// waker), the WebSocket bridge awaits it instead of polling. Ticks raised while nobody waits collapse into one.
///
/// The other way, "the bot's answer is queued": the bridge calls [`FrameSignal::answered`], which unparks the
/// session's worker so the tick's send half goes out now rather than at the end of its answer window.
#[derive(Debug, Default)]
pub struct FrameSignal {
    raised: AtomicBool,
    waker: futures_util::task::AtomicWaker,
    answer: AtomicBool,
    worker: std::sync::OnceLock<std::thread::Thread>,
}

impl FrameSignal {
    /// Bot side: audio was queued in the outbound ring; wakes the session's worker (if it has registered).
    pub fn answered(&self) {
        self.answer.store(true, Ordering::Release);
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    /// Worker side: the thread to wake when the bot answers (the first caller's; a session stays on its worker).
    pub fn register_worker(&self) {
        let _ = self.worker.set(std::thread::current());
    }

    /// Worker side: true once after each [`FrameSignal::answered`].
    pub fn take_answer(&self) -> bool {
        self.answer.swap(false, Ordering::AcqRel)
    }

    /// Raises the signal and wakes the task waiting for it, if any.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until the signal is raised (returns at once if it was since the last wait), and lowers it.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.raised.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: do not miss it.
            if self.raised.swap(false, Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// An event for a bot.
#[derive(Debug, Clone, PartialEq)]
pub enum BotEvent {
    /// The roster (participants with their media source ids).
    Participants(Value),
    /// The dominant speaker changed.
    DominantSpeaker {
        /// Previous media source id.
        previous: Option<u32>,
        /// Current media source id.
        current: Option<u32>,
    },
    /// A DTMF digit from the call.
    Dtmf {
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// Duration in milliseconds.
        duration_ms: u16,
    },
    /// The bot's audio started (or stopped) being sent (`AudioSendStatusChanged`).
    SendStatus {
        /// True once the first frame was queued.
        active: bool,
    },
    /// A mark placed by the bot was played (or discarded by `clear`).
    Mark {
        /// The bot's name for it.
        name: String,
        /// True if `clear` discarded it before it played.
        cleared: bool,
    },
    /// A new participant stream started.
    StreamStarted {
        /// Its media source id.
        source_id: u32,
    },
    /// The session ended.
    Stop {
        /// Why.
        reason: String,
    },
}

impl BotEvent {
    /// The JSON text message of the bot protocol (`docs/bot-protocol.md`).
    pub fn to_json(&self) -> Value {
        match self {
            BotEvent::Participants(roster) => {
                json!({"event": "participants", "participants": roster})
            }
            BotEvent::DominantSpeaker { previous, current } => {
                json!({"event": "dominantSpeaker", "sourceId": current, "previous": previous})
            }
            BotEvent::Dtmf { digit, duration_ms } => {
                json!({"event": "dtmf", "digit": digit.to_string(), "durationMs": duration_ms})
            }
            BotEvent::SendStatus { active } => json!({"event": "sendStatus", "active": active}),
            BotEvent::Mark { name, cleared } => {
                json!({"event": "mark", "name": name, "cleared": cleared})
            }
            BotEvent::StreamStarted { source_id } => {
                json!({"event": "streamStarted", "sourceId": source_id})
            }
            BotEvent::Stop { reason } => json!({"event": "stop", "reason": reason}),
        }
    }
}

/// The session's state as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// Waiting for the edge to attach.
    WaitingForEdge = 0,
    /// Media flows.
    Active = 1,
    /// The edge detached; the session waits for it to come back.
    EdgeDetached = 2,
    /// Ended.
    Ended = 3,
}

/// Something dropped, refused or cut short, counted per session and daemon-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
#[non_exhaustive]
pub enum Dropped {
    /// A bot event dropped because the bot did not drain its queue.
    BotEvent,
    /// A WebSocket bot did not take a message within the write timeout and was disconnected.
    WsStall,
    /// A WebSocket bot sent nothing (not even a pong) within the pong timeout and was disconnected.
    WsPongTimeout,
    /// A WebSocket bot went away (any reason, including the two above).
    WsDisconnect,
    /// A recording file reached its duration or size cap.
    RecordingCap,
    /// A new speaker (or a next part) was not recorded: the session's file limit was reached.
    RecordingFileRefused,
    /// A recording write (or create, or finalise) failed.
    RecordingWriteError,
    /// A notice pushed out of the session's bounded notice list.
    Notice,
    /// A received packet overwritten in a receive ring (QUIC or RTP/UDP) before the worker took it.
    RxRingOverflow,
    /// A packet to send overwritten in a transmit ring (QUIC or RTP/UDP) before the network side sent it.
    TxRingOverflow,
    /// An RTP/UDP packet dropped by strict RTP: it came from another address than the session's source.
    RtpWrongSource,
    /// The RTP/UDP edge's latched source moved to a new address (symmetric RTP, NAT rebinding). Not a drop, but
    /// a change worth seeing next to the wrong-source drops.
    RtpSourceChange,
}

const DROP_KINDS: usize = 12;

impl Dropped {
    /// Every kind, in index order.
    pub const ALL: [Dropped; DROP_KINDS] = [
        Dropped::BotEvent,
        Dropped::WsStall,
        Dropped::WsPongTimeout,
        Dropped::WsDisconnect,
        Dropped::RecordingCap,
        Dropped::RecordingFileRefused,
        Dropped::RecordingWriteError,
        Dropped::Notice,
        Dropped::RxRingOverflow,
        Dropped::TxRingOverflow,
        Dropped::RtpWrongSource,
        Dropped::RtpSourceChange,
    ];

    /// The `/metrics` counter (`mediaproc_<name>_total`) and its help text.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            Dropped::BotEvent => (
                "bot_events_dropped",
                "Bot events dropped because the bot did not drain them.",
            ),
            Dropped::WsStall => (
                "ws_stalls",
                "WebSocket bots disconnected for not reading within the write timeout.",
            ),
            Dropped::WsPongTimeout => (
                "ws_pong_timeouts",
                "WebSocket bots disconnected for not answering pings.",
            ),
            Dropped::WsDisconnect => ("ws_disconnects", "WebSocket bot disconnections."),
            Dropped::RecordingCap => (
                "recording_caps_hit",
                "Recording files closed at their duration or size cap.",
            ),
            Dropped::RecordingFileRefused => (
                "recording_files_refused",
                "Recording files not opened because the session's file limit was reached.",
            ),
            Dropped::RecordingWriteError => (
                "recording_write_errors",
                "Recording writes, creates or finalisations that failed.",
            ),
            Dropped::Notice => (
                "session_notices_dropped",
                "Session notices pushed out of the bounded notice list.",
            ),
            Dropped::RxRingOverflow => (
                "rx_ring_dropped",
                "Received packets overwritten in a receive ring before the media worker took them.",
            ),
            Dropped::TxRingOverflow => (
                "tx_ring_dropped",
                "Packets to send overwritten in a transmit ring before the network side sent them.",
            ),
            Dropped::RtpWrongSource => (
                "rtp_udp_wrong_source_dropped",
                "RTP/UDP packets dropped by strict RTP because they came from another address than the source.",
            ),
            Dropped::RtpSourceChange => (
                "rtp_udp_source_changes",
                "Times an RTP/UDP edge's latched source moved to a new address (symmetric RTP, NAT rebinding).",
            ),
        }
    }
}

/// A fixed set of drop counters.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DROP_KINDS]);

impl DropCounters {
    /// Adds one.
    pub fn add(&self, kind: Dropped) {
        self.add_n(kind, 1);
    }

    /// Adds `n`.
    pub fn add_n(&self, kind: Dropped, n: u64) {
        self.0[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self, kind: Dropped) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// Live state of a session, written by its worker (counters once a second, roster on change), its bot and its
/// WebSocket bridge, and read by the API.
#[derive(Debug)]
pub struct LiveSession {
    state: AtomicU8,
    stats: Mutex<Value>,
    participants: Mutex<Value>,
    bot_port: Mutex<Option<BotPort>>,
    notices: Mutex<VecDeque<Value>>,
    drops: DropCounters,
    totals: Arc<DropCounters>,
    /// Recording files the session's `record` bot has opened.
    pub recording_files: AtomicU64,
    /// A WebSocket bot is connected now.
    pub bot_connected: AtomicBool,
    end_requested: AtomicBool,
    /// Why the session ends, for the bot's `stop` (set once, by the first asker that gives a reason).
    end_reason: std::sync::OnceLock<&'static str>,
    ended: watch::Sender<bool>,
}

impl LiveSession {
    /// A session's live state; `port` is kept for a bot that connects later (WebSocket, in-process); `totals`
    /// are the daemon-wide counters every drop is also added to.
    pub fn new(port: Option<BotPort>, totals: Arc<DropCounters>) -> Self {
        LiveSession {
            state: AtomicU8::new(SessionState::WaitingForEdge as u8),
            stats: Mutex::new(json!({})),
            participants: Mutex::new(json!([])),
            bot_port: Mutex::new(port),
            notices: Mutex::new(VecDeque::with_capacity(NOTICE_CAPACITY)),
            drops: DropCounters::default(),
            totals,
            recording_files: AtomicU64::new(0),
            bot_connected: AtomicBool::new(false),
            end_requested: AtomicBool::new(false),
            end_reason: std::sync::OnceLock::new(),
            ended: watch::channel(false).0,
        }
    }

    /// Counts a drop, in the session and daemon-wide.
    pub fn count(&self, kind: Dropped) {
        self.count_n(kind, 1);
    }

    /// Counts `n` drops (a counter read as a delta), in the session and daemon-wide.
    pub fn count_n(&self, kind: Dropped, n: u64) {
        if n > 0 {
            self.drops.add_n(kind, n);
            self.totals.add_n(kind, n);
        }
    }

    /// The session's count of a drop.
    pub fn dropped(&self, kind: Dropped) -> u64 {
        self.drops.get(kind)
    }

    /// Records a notice for the API (`event` is a camelCase name); the oldest goes when the list is full.
    pub fn notice(&self, event: &str, detail: Value) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        if notices.len() >= NOTICE_CAPACITY {
            notices.pop_front();
            drop(notices);
            self.count(Dropped::Notice);
            notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        }
        notices.push_back(json!({"unixMs": unix_ms, "event": event, "detail": detail}));
    }

    /// The notices, oldest first.
    pub fn notices_json(&self) -> Value {
        let notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        Value::Array(notices.iter().cloned().collect())
    }

    /// Sets the state.
    pub fn set_state(&self, state: SessionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The state's API name.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            0 => "waitingForEdge",
            1 => "active",
            2 => "edgeDetached",
            _ => "ended",
        }
    }

    /// Asks the worker to end the session on its next pass (a flag, so no full queue can lose the request).
    pub fn request_end(&self) {
        self.end_requested.store(true, Ordering::Relaxed);
    }

    /// Asks for the end as [`LiveSession::request_end`] does, saying why (the bot's `stop` carries it).
    pub fn request_end_because(&self, reason: &'static str) {
        let _ = self.end_reason.set(reason);
        self.request_end();
    }

    /// Why the session ends: the reason the first asker gave, else "session ended".
    pub fn end_reason(&self) -> &'static str {
        self.end_reason.get().copied().unwrap_or("session ended")
    }

    /// True once the end was asked for.
    pub fn end_requested(&self) -> bool {
        self.end_requested.load(Ordering::Relaxed)
    }

    /// The worker ended the session: state `ended`, and whoever waits in [`LiveSession::wait_ended`] wakes.
    pub fn mark_ended(&self) {
        self.set_state(SessionState::Ended);
        self.ended.send_replace(true);
    }

    /// A receiver that sees `true` once the worker ended the session.
    pub fn ended_signal(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// True once the worker ended the session.
    pub fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Waits until the worker ended the session, at most `limit`; returns whether it did.
    pub async fn wait_ended(&self, limit: Duration) -> bool {
        let mut ended = self.ended.subscribe();
        tokio::time::timeout(limit, ended.wait_for(|ended| *ended))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Publishes statistics (the worker, once a second).
    pub fn set_stats(&self, stats: Value) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// The last published statistics, with the counters kept here.
    pub fn stats_json(&self) -> Value {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        stats["botEventsDropped"] = self.dropped(Dropped::BotEvent).into();
        stats["botConnected"] = self.bot_connected.load(Ordering::Relaxed).into();
        stats["websocket"] = json!({
            "stalls": self.dropped(Dropped::WsStall),
            "pongTimeouts": self.dropped(Dropped::WsPongTimeout),
            "disconnects": self.dropped(Dropped::WsDisconnect),
        });
        stats["recording"] = json!({
            "files": self.recording_files.load(Ordering::Relaxed),
            "capsHit": self.dropped(Dropped::RecordingCap),
            "filesRefused": self.dropped(Dropped::RecordingFileRefused),
            "writeErrors": self.dropped(Dropped::RecordingWriteError),
        });
        stats["noticesDropped"] = self.dropped(Dropped::Notice).into();
        stats["rxRingDropped"] = self.dropped(Dropped::RxRingOverflow).into();
        stats["txRingDropped"] = self.dropped(Dropped::TxRingOverflow).into();
        stats
    }

    /// Reads the last published statistics in place (for `/metrics`, which reads every session's).
    pub fn with_stats<T>(&self, read: impl FnOnce(&Value) -> T) -> T {
        read(&self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Publishes the roster.
    pub fn set_participants(&self, participants: Value) {
        *self.participants.lock().unwrap_or_else(|p| p.into_inner()) = participants;
    }

    /// The roster.
    pub fn participants_json(&self) -> Value {
        self.participants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the bot's ring ends (a bot connecting); `None` while another bot holds them.
    pub fn take_bot_port(&self) -> Option<BotPort> {
        let port = self
            .bot_port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if port.is_some() {
            self.bot_connected.store(true, Ordering::Relaxed);
        }
        port
    }

    /// Gives the ring ends back (the WebSocket bot disconnected; it may reconnect).
    pub fn return_bot_port(&self, port: BotPort) {
        *self.bot_port.lock().unwrap_or_else(|p| p.into_inner()) = Some(port);
        self.bot_connected.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_given_for_the_end_is_the_one_the_bot_hears() {
        let live = LiveSession::new(None, Arc::new(DropCounters::default()));
        assert_eq!(live.end_reason(), "session ended");
        live.request_end_because("the node's drain deadline passed");
        live.request_end_because("the media processor is shutting down");
        assert!(live.end_requested());
        assert_eq!(live.end_reason(), "the node's drain deadline passed");
    }

    #[test]
    fn drops_count_in_the_session_and_daemon_wide_and_notices_stay_bounded() {
        let totals = Arc::new(DropCounters::default());
        let a = LiveSession::new(None, totals.clone());
        let b = LiveSession::new(None, totals.clone());
        a.count(Dropped::WsStall);
        b.count(Dropped::WsStall);
        assert_eq!(a.dropped(Dropped::WsStall), 1);
        assert_eq!(totals.get(Dropped::WsStall), 2);
        for i in 0..NOTICE_CAPACITY + 3 {
            a.notice("test", json!(i));
        }
        let notices = a.notices_json();
        assert_eq!(notices.as_array().map(Vec::len), Some(NOTICE_CAPACITY));
        assert_eq!(notices[0]["detail"], 3);
        assert_eq!(a.dropped(Dropped::Notice), 3);
        assert_eq!(a.stats_json()["websocket"]["stalls"], 1);
        for (i, kind) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }
}
