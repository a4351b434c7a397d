//! The daemon's side of the WebRTC edge: a session's peer slot, the peer's events as session notices, counters.
//!
//! Signalling is WHIP (RFC 9725): `POST /v1/sessions/{id}/webrtc` with the SDP offer and the session's edge token
//! answers `201` with the SDP answer and a `Location` (`/v1/sessions/{id}/webrtc/{resource}`); `DELETE` on it
//! ends the peer. A session holds at most one peer: a new offer replaces the peer (its rings take the old one's
//! place on the worker, as a QUIC re-attach does), so a reloaded browser tab simply takes over. The network side
//! (str0m, the socket, the driver task) is `mediaproc_net::webrtc`; the worker sees the peer as a packet edge like
//! the RTP/UDP one. ICE/DTLS failures and closes become session notices (`webrtcConnected`, `webrtcFailed`,
//! `webrtcClosed`) and counters; the session itself is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mediaproc_net::{PeerEvent, WebRtcPeer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::session::LiveSession;

/// The talk page: one HTML file with its script, no build step (served at `/talk`).
pub const TALK_PAGE: &str = include_str!("talk.html");

/// Daemon-wide WebRTC counters (`/metrics`).
#[derive(Debug, Default)]
pub struct WebRtcCounters {
    /// Offers answered (peers created).
    pub answered: AtomicU64,
    /// Offers refused: malformed SDP, no audio.
    pub refused_sdp: AtomicU64,
    /// Offers refused: no Opus.
    pub refused_no_opus: AtomicU64,
    /// Offers refused: `webrtc_max_peers` reached, or no free port in the range.
    pub refused_full: AtomicU64,
    /// Peers that connected (ICE and DTLS completed).
    pub connected: AtomicU64,
    /// Peers that failed (ICE, DTLS or the connect timeout).
    pub failed: AtomicU64,
    /// Peers that closed or lost ICE after connecting.
    pub closed: AtomicU64,
    /// Peers replaced by a newer offer on the same session.
    pub replaced: AtomicU64,
}

/// A session's WebRTC peer as the engine holds it.
#[derive(Debug)]
pub struct PeerSlot {
    /// The WHIP resource id (the last segment of `Location`).
    pub resource: String,
    /// The running peer (dropping it closes the peer).
    pub peer: WebRtcPeer,
}

impl PeerSlot {
    /// True while the peer is connecting or connected.
    pub fn is_live(&self) -> bool {
        self.peer.is_live()
    }

    /// The peer for `GET /v1/sessions/{id}`.
    pub fn to_json(&self, session: uuid::Uuid) -> Value {
        let info = self.peer.info();
        json!({
            "resource": self.resource,
            "location": format!("/v1/sessions/{session}/webrtc/{}", self.resource),
            "state": info.state().name(),
            "iceState": info.ice_state(),
            "connectMs": info.connect_ms(),
            "opusPayloadType": info.opus_payload_type(),
            "local": self.peer.local_addr().to_string(),
            "rejectedDatagrams": info.rejected(),
        })
    }
}

/// Turns a peer's events into session notices and counters until the peer ends.
pub fn forward_events(
    mut events: mpsc::Receiver<PeerEvent>,
    live: Arc<LiveSession>,
    resource: String,
    counters: Arc<WebRtcCounters>,
) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                PeerEvent::Connected { after_ms, .. } => {
                    counters.connected.fetch_add(1, Relaxed);
                    live.notice(
                        "webrtcConnected",
                        json!({"resource": resource, "afterMs": after_ms}),
                    );
                    tracing::info!(resource, after_ms, "WebRTC peer connected");
                }
                PeerEvent::Failed { reason } => {
                    counters.failed.fetch_add(1, Relaxed);
                    tracing::info!(resource, reason, "WebRTC peer failed");
                    live.notice(
                        "webrtcFailed",
                        json!({"resource": resource, "reason": reason}),
                    );
                }
                PeerEvent::Closed { reason } => {
                    counters.closed.fetch_add(1, Relaxed);
                    live.notice(
                        "webrtcClosed",
                        json!({"resource": resource, "reason": reason}),
                    );
                }
                _ => {}
            }
        }
    });
}
