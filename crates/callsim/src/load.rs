//! A load edge: many sessions on one QUIC connection, each with one talking participant, sent by one task with
//! absolute deadlines — the way a calling service multiplexes calls. Pre-encoded audio keeps the edge's own CPU
//! small, so what is measured is the media processor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mediaproc_net::{EdgeConfig, EdgeConnection, ServerTrust};
use mediaproc_pipeline::{EncoderSettings, OpusEncoder, SampleRate};
use mediaproc_wire::control::{Codec, Direction, FlowDecl, MediaKind, NO_MSI};
use mediaproc_wire::rtp::RtpPacket;
use tokio::time::Instant;

use crate::edge::{EdgeTarget, OPUS_PAYLOAD_TYPE};
use crate::error::CallsimError;
use crate::voice::{FRAME_SAMPLES, Voice};

/// Counters of a load run, readable while it runs.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Packets sent to the daemon.
    pub sent: AtomicU64,
    /// Packets received from the daemon.
    pub received: AtomicU64,
    /// Sends the connection refused (datagram buffer full).
    pub send_errors: AtomicU64,
}

/// Attaches every target on one connection and streams one participant into each for `duration`.
pub async fn run_load(
    server: std::net::SocketAddr,
    server_name: &str,
    trust: ServerTrust,
    targets: &[EdgeTarget],
    duration: Duration,
    counters: Arc<LoadCounters>,
) -> Result<(), CallsimError> {
    let media = |err: mediaproc_net::NetError| CallsimError::Media(err.to_string());
    let conn = Arc::new(
        EdgeConnection::connect(&EdgeConfig {
            server,
            server_name: server_name.to_owned(),
            trust,
            keep_alive: Duration::from_secs(2),
        })
        .await
        .map_err(media)?,
    );
    // Flow ids: 2i for session i's participant, 2i+1 for its bot's audio.
    for (i, target) in targets.iter().enumerate() {
        let mut flows = vec![FlowDecl {
            flow_id: 2 * i as u64,
            direction: Direction::Render,
            media: MediaKind::Audio,
            context: target.render_context,
            msi: 100,
            payload_type: OPUS_PAYLOAD_TYPE,
            codec: Codec::Opus,
        }];
        if let Some(context) = target.source_context {
            flows.push(FlowDecl {
                flow_id: 2 * i as u64 + 1,
                direction: Direction::Source,
                media: MediaKind::Audio,
                context,
                msi: NO_MSI,
                payload_type: OPUS_PAYLOAD_TYPE,
                codec: Codec::Opus,
            });
        }
        conn.attach(target.session_id, target.token.as_bytes(), flows)
            .await
            .map_err(media)?;
    }

    // One second of a talking voice, encoded once.
    let mut encoder = OpusEncoder::new(SampleRate::HZ_16000, EncoderSettings::default())
        .map_err(|err| CallsimError::Media(err.to_string()))?;
    let mut voice = Voice::new(0, 1, 1000, 1000);
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut payload = [0u8; 1500];
    let mut payloads = Vec::with_capacity(50);
    for n in 0..50 {
        voice.frame(n, &mut pcm);
        let len = encoder
            .encode(&pcm, &mut payload)
            .map_err(|err| CallsimError::Media(err.to_string()))?;
        payloads.push(payload[..len].to_vec());
    }

    let listener = {
        let conn = conn.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Ok((flow, _)) = conn.recv_packet().await {
                if flow % 2 == 1 {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let frames = (duration.as_secs_f64() / 0.02) as u64;
    let mut packet = vec![0u8; 1500];
    for n in 0..frames {
        tokio::time::sleep_until(start + Duration::from_millis(20) * n as u32).await;
        let body = &payloads[(n % 50) as usize];
        for i in 0..targets.len() {
            let rtp = RtpPacket::new(
                OPUS_PAYLOAD_TYPE,
                n as u16,
                (n as u32).wrapping_mul(960),
                0x1000 + i as u32,
                body,
            );
            let Ok(len) = rtp.write(&mut packet) else {
                continue;
            };
            match conn.send_packet(2 * i as u64, &packet[..len]) {
                Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    listener.abort();
    if let Ok(conn) = Arc::try_unwrap(conn) {
        conn.close().await;
    }
    Ok(())
}
