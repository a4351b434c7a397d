//! The edge (client) side of the protocol: connects to a media processor's `quic://` mpUri, attaches
//! sessions, exchanges control messages and RTP datagrams. Used by the call emulator and the tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mediaproc_wire::control::{self, ControlMessage, Decoded, FlowDecl};
use mediaproc_wire::{RoqDatagram, roq};
use quinn::VarInt;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::error::NetError;
use crate::tls::{ServerTrust, quic_client_config};

/// How long [`EdgeConnection::attach`] waits for the answer.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the queue of control messages received from the MP.
pub const EDGE_CONTROL_QUEUE: usize = 1024;

/// Connection parameters of an edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The MP's address (from the mpUri).
    pub server: SocketAddr,
    /// TLS server name (the mpUri host).
    pub server_name: String,
    /// How to authenticate the MP.
    pub trust: ServerTrust,
    /// QUIC keep-alive ping interval.
    pub keep_alive: Duration,
}

/// A parsed `quic://host:port/MediaProcessor` URI: (host, port).
pub fn parse_mp_uri(uri: &str) -> Option<(String, u16)> {
    let rest = uri.strip_prefix("quic://")?;
    let (authority, path) = rest.split_once('/')?;
    if path != "MediaProcessor" {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// An edge's connection to a media processor.
#[derive(Debug)]
pub struct EdgeConnection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: Mutex<quinn::SendStream>,
    control_rx: Mutex<mpsc::Receiver<ControlMessage>>,
    /// Messages received while waiting for a particular one (e.g. during `attach`), delivered first later.
    backlog: std::sync::Mutex<std::collections::VecDeque<ControlMessage>>,
    arena: std::sync::Mutex<BytesMut>,
    reader: tokio::task::JoinHandle<()>,
}

impl EdgeConnection {
    /// Connects and opens the control stream.
    pub async fn connect(config: &EdgeConfig) -> Result<Self, NetError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(config.keep_alive))
            .datagram_receive_buffer_size(Some(4 << 20))
            .datagram_send_buffer_size(4 << 20);
        let cc = quic_client_config(&config.trust, transport)?;
        let bind: SocketAddr = if config.server.is_ipv6() {
            "[::]:0"
                .parse()
                .map_err(|_| NetError::Tls("bad bind address".into()))?
        } else {
            "0.0.0.0:0"
                .parse()
                .map_err(|_| NetError::Tls("bad bind address".into()))?
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| NetError::Bind { addr: bind, source })?;
        endpoint.set_default_client_config(cc);
        let connect_err = |reason: String| NetError::Connect {
            addr: config.server,
            reason,
        };
        let conn = endpoint
            .connect(config.server, &config.server_name)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(EDGE_CONTROL_QUEUE);
        let reader = tokio::spawn(read_control(recv, tx));
        Ok(Self {
            endpoint,
            conn,
            send: Mutex::new(send),
            control_rx: Mutex::new(rx),
            backlog: std::sync::Mutex::new(std::collections::VecDeque::new()),
            arena: std::sync::Mutex::new(BytesMut::with_capacity(64 * 1024)),
            reader,
        })
    }

    /// The underlying QUIC connection (RTT, stats).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends one control message.
    pub async fn send_control(&self, msg: &ControlMessage) -> Result<(), NetError> {
        let mut buf = vec![0u8; control::MAX_FRAME_LEN];
        let n = msg.encode(&mut buf)?;
        self.send_raw_control(&buf[..n]).await
    }

    /// Writes raw bytes on the control stream (tests use it to send malformed frames).
    pub async fn send_raw_control(&self, bytes: &[u8]) -> Result<(), NetError> {
        self.send
            .lock()
            .await
            .write_all(bytes)
            .await
            .map_err(|e| NetError::ConnectionLost(e.to_string()))
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<ControlMessage>> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Next control message from the MP (waits).
    pub async fn next_control(&self) -> Result<ControlMessage, NetError> {
        self.wait_for(|_| true).await
    }

    /// Waits for the first message matching `pred`; others received meanwhile are kept, in order, for
    /// [`Self::next_control`] and later waits (at most [`EDGE_CONTROL_QUEUE`]; beyond that the oldest go).
    pub async fn wait_for(
        &self,
        pred: impl Fn(&ControlMessage) -> bool,
    ) -> Result<ControlMessage, NetError> {
        loop {
            let mut rx = self.control_rx.lock().await;
            {
                let mut backlog = self.backlog();
                if let Some(i) = backlog.iter().position(&pred) {
                    if let Some(m) = backlog.remove(i) {
                        return Ok(m);
                    }
                }
            }
            let m = rx
                .recv()
                .await
                .ok_or_else(|| NetError::ConnectionLost("control stream closed".into()))?;
            if pred(&m) {
                return Ok(m);
            }
            let mut backlog = self.backlog();
            if backlog.len() >= EDGE_CONTROL_QUEUE {
                backlog.pop_front();
            }
            backlog.push_back(m);
        }
    }

    /// Next control message, or `None` after `timeout`.
    pub async fn next_control_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<ControlMessage>, NetError> {
        match tokio::time::timeout(timeout, self.next_control()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Attaches a session and waits for `AttachOk`; a refusal returns [`NetError::Peer`] with the code.
    /// Other control messages that arrive meanwhile stay queued for [`Self::next_control`]; several attaches
    /// may run concurrently.
    pub async fn attach(
        &self,
        session_id: Uuid,
        token: &[u8],
        flows: Vec<FlowDecl>,
    ) -> Result<(), NetError> {
        self.send_control(&ControlMessage::Attach {
            session_id,
            token: token.to_vec(),
            flows,
        })
        .await?;
        let wait = async {
            let answer = self
                .wait_for(|m| match m {
                    ControlMessage::AttachOk { session_id: s } => *s == session_id,
                    ControlMessage::Error { session_id: s, .. } => *s == session_id || s.is_nil(),
                    _ => false,
                })
                .await?;
            match answer {
                ControlMessage::Error { code, message, .. } => {
                    Err(NetError::Peer { code, message })
                }
                _ => Ok(()),
            }
        };
        tokio::time::timeout(ATTACH_TIMEOUT, wait)
            .await
            .map_err(|_| NetError::Timeout("AttachOk"))?
    }

    /// Sends one RTP/RTCP packet on a flow (not waiting; the datagram is dropped if the send buffer is full).
    pub fn send_packet(&self, flow_id: u64, packet: &[u8]) -> Result<(), NetError> {
        let d = RoqDatagram { flow_id, packet };
        let total = d.encoded_len();
        let bytes = {
            let mut arena = self.arena.lock().unwrap_or_else(|p| p.into_inner());
            if arena.capacity() - arena.len() < total {
                arena.reserve((64 * 1024).max(total));
            }
            let start = arena.len();
            arena.resize(start + total, 0);
            d.write(&mut arena[start..])?;
            arena.split().freeze()
        };
        self.send_datagram(bytes)
    }

    /// Sends an arbitrary datagram (tests use it for malformed input).
    pub fn send_datagram(&self, bytes: Bytes) -> Result<(), NetError> {
        self.conn
            .send_datagram(bytes)
            .map_err(|e| NetError::Datagram(e.to_string()))
    }

    /// Receives the next datagram as (flow id, packet). The packet is RTP or RTCP (the MP sends reports on
    /// every flow, proto/SPEC.md §4.5): tell them apart with `mediaproc_wire::roq::is_rtcp`.
    pub async fn recv_packet(&self) -> Result<(u64, Bytes), NetError> {
        loop {
            let d = self
                .conn
                .read_datagram()
                .await
                .map_err(|e| NetError::ConnectionLost(e.to_string()))?;
            if let Ok((flow, n)) = roq::decode_varint(&d) {
                if n < d.len() {
                    return Ok((flow, d.slice(n..)));
                }
            }
        }
    }

    /// Closes the connection (all sessions detach) and waits for the close to be sent.
    pub async fn close(self) {
        self.conn
            .close(VarInt::from_u32(crate::server::CLOSE_NORMAL), b"bye");
        self.reader.abort();
        self.endpoint.wait_idle().await;
    }
}

async fn read_control(mut recv: quinn::RecvStream, tx: mpsc::Sender<ControlMessage>) {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * control::MAX_FRAME_LEN);
    let mut chunk = vec![0u8; control::MAX_FRAME_LEN];
    while let Ok(Some(n)) = recv.read(&mut chunk).await {
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match control::decode_frame(&buf) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Message(m, len)) => {
                    buf.drain(..len);
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(Decoded::Unknown { len, .. }) => {
                    buf.drain(..len);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed control message from the MP");
                    return;
                }
            }
        }
    }
}
