//! Hostile peers against the QUIC and RTP/UDP endpoints, with real sockets on loopback: squatters that never
//! attach, an edge that stops reading its control stream, a refusal flood, RTP injection and hijack, NAT
//! rebinding, and garbage floods. Each test asserts the defended behaviour and, where the attack targets a
//! shared endpoint, that a healthy call running at the same time loses no packet in either direction.
//!
//! Assertions wait for conditions with deadlines (`wait_until`), never for fixed sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mediaproc_net::server::{CLOSE_ATTACH_DEADLINE, CLOSE_CONTROL_STALLED, CLOSE_REFUSED_ATTACHES};
use mediaproc_net::{
    EdgeConfig, EdgeConnection, MediaServer, NetError, QuicSession, RtpUdpConfig, RtpUdpSocket,
    ServerConfig, ServerTrust, SessionEvent, SessionSpec, SessionStatsSnapshot, quic_client_config,
};
use mediaproc_wire::control::{
    self, Codec, ControlMessage, Decoded, Direction, FlowDecl, MediaKind, NO_MSI, error_code,
};
use mediaproc_wire::{RtpPacket, roq};
use quinn::VarInt;
use tokio::net::UdpSocket;
use uuid::Uuid;

const RENDER: Uuid = Uuid::from_u128(1);
const SOURCE: Uuid = Uuid::from_u128(2);
const RENDER_FLOW: u64 = 2;
const SOURCE_FLOW: u64 = 3;

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`. Returns the time it took.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn server_with(tune: impl FnOnce(&mut ServerConfig)) -> MediaServer {
    let mut cfg = ServerConfig::development("127.0.0.1:0".parse().unwrap());
    tune(&mut cfg);
    MediaServer::bind(cfg).await.unwrap()
}

fn add_session(server: &MediaServer) -> (QuicSession, Vec<u8>) {
    let token = mediaproc_net::generate_token().unwrap().into_bytes();
    let s = server
        .add_session(SessionSpec {
            id: Uuid::new_v4(),
            token: token.clone(),
            render_contexts: vec![RENDER],
            source_contexts: vec![SOURCE],
        })
        .unwrap();
    (s, token)
}

fn edge_config(server: &MediaServer) -> EdgeConfig {
    EdgeConfig {
        server: server.local_addr().unwrap(),
        server_name: "localhost".into(),
        trust: ServerTrust::PinnedSha256(server.certificate_fingerprint()),
        keep_alive: Duration::from_secs(1),
    }
}

fn flows() -> Vec<FlowDecl> {
    let f = |flow_id, direction, context| FlowDecl {
        flow_id,
        direction,
        media: MediaKind::Audio,
        context,
        msi: NO_MSI,
        payload_type: 111,
        codec: Codec::Opus,
    };
    vec![
        f(RENDER_FLOW, Direction::Render, RENDER),
        f(SOURCE_FLOW, Direction::Source, SOURCE),
    ]
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let payload = [0x5au8; 60];
    let p = RtpPacket::new(pt, seq, u32::from(seq).wrapping_mul(960), ssrc, &payload);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

fn frame(msg: &ControlMessage) -> Vec<u8> {
    let mut b = vec![0u8; control::MAX_FRAME_LEN];
    let n = msg.encode(&mut b).unwrap();
    b.truncate(n);
    b
}

/// Resident set size of this process in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A quinn client endpoint that trusts `server`, with `tune` applied to its transport.
fn raw_client(
    server: &MediaServer,
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> quinn::Endpoint {
    let mut transport = quinn::TransportConfig::default();
    tune(&mut transport);
    let cc = quic_client_config(
        &ServerTrust::PinnedSha256(server.certificate_fingerprint()),
        transport,
    )
    .unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cc);
    ep
}

fn app_close_code(conn: &quinn::Connection) -> Option<VarInt> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code),
        _ => None,
    }
}

/// A healthy call on its own edge connection: the edge sends 20 ms RTP on the render flow, a stand-in
/// worker echoes every packet back on the source flow, and both sides record the sequence numbers.
struct Call {
    edge: Arc<EdgeConnection>,
    stop: Arc<AtomicBool>,
    worker_stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
    sent: Arc<Mutex<Vec<u16>>>,
    at_mp: Arc<Mutex<Vec<u16>>>,
    back: Arc<Mutex<Vec<u16>>>,
    worker: tokio::task::JoinHandle<QuicSession>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Call {
    async fn start(server: &MediaServer) -> Call {
        let (mut session, token) = add_session(server);
        let edge = Arc::new(EdgeConnection::connect(&edge_config(server)).await.unwrap());
        edge.attach(session.id, &token, flows()).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let at_mp = Arc::new(Mutex::new(Vec::new()));
        let back = Arc::new(Mutex::new(Vec::new()));
        let sender = {
            let (edge, stop, sent) = (edge.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    edge.send_packet(RENDER_FLOW, &rtp(111, seq, 0xCA11))
                        .unwrap();
                    sent.lock().unwrap().push(seq);
                    seq = seq.wrapping_add(1);
                }
            })
        };
        let worker = {
            let (stop, at_mp) = (worker_stop.clone(), at_mp.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    match session.rx.pop(&mut buf) {
                        Some(m) => {
                            let p = RtpPacket::parse(&buf[..m.len]).unwrap();
                            at_mp.lock().unwrap().push(p.sequence);
                            let echo = rtp(111, p.sequence, 0xEC40);
                            session.tx.push(SOURCE_FLOW, 0, &echo).unwrap();
                            session.waker.wake();
                        }
                        None if stop.load(Ordering::Relaxed) => return session,
                        None => tokio::time::sleep(Duration::from_millis(2)).await,
                    }
                }
            })
        };
        let receiver = {
            let (edge, back) = (edge.clone(), back.clone());
            tokio::spawn(async move {
                while let Ok((flow, pkt)) = edge.recv_packet().await {
                    if flow == SOURCE_FLOW && !roq::is_rtcp(&pkt) {
                        back.lock()
                            .unwrap()
                            .push(RtpPacket::parse(&pkt).unwrap().sequence);
                    }
                }
            })
        };
        Call {
            edge,
            stop,
            worker_stop,
            sender,
            sent,
            at_mp,
            back,
            worker,
            tasks: vec![receiver],
        }
    }

    fn received(&self) -> usize {
        self.back.lock().unwrap().len()
    }

    /// Stops sending, waits until every packet sent came back, and checks that none was lost or
    /// reordered in either direction; returns the session (for its statistics) and the packet count.
    async fn finish(self) -> (QuicSession, usize) {
        self.stop.store(true, Ordering::Relaxed);
        // The sender ends at its next tick.
        self.sender.await.unwrap();
        let sent = self.sent.lock().unwrap().clone();
        let (at_mp, back) = (self.at_mp.clone(), self.back.clone());
        let all_back = tokio::time::timeout(
            Duration::from_secs(5),
            wait_until(Duration::from_secs(5), "every packet echoed back", || {
                at_mp.lock().unwrap().len() >= sent.len()
                    && back.lock().unwrap().len() >= sent.len()
            }),
        )
        .await;
        if all_back.is_err() {
            let missing = |v: &[u16]| {
                sent.iter()
                    .filter(|s| !v.contains(s))
                    .copied()
                    .collect::<Vec<_>>()
            };
            panic!(
                "not every packet came back: {} sent, missing at the MP {:?}, missing back at the edge {:?}",
                sent.len(),
                missing(&at_mp.lock().unwrap()),
                missing(&back.lock().unwrap())
            );
        }
        self.worker_stop.store(true, Ordering::Relaxed);
        let session = self.worker.await.unwrap();
        for t in self.tasks {
            t.abort();
        }
        let in_order = |v: &[u16]| v.iter().enumerate().all(|(i, s)| *s == i as u16);
        let at_mp = at_mp.lock().unwrap().clone();
        let back = back.lock().unwrap().clone();
        assert_eq!(at_mp.len(), sent.len(), "packets lost edge → MP");
        assert!(in_order(&at_mp), "gap or reorder edge → MP: {at_mp:?}");
        assert_eq!(back.len(), sent.len(), "packets lost MP → edge");
        assert!(in_order(&back), "gap or reorder MP → edge: {back:?}");
        let st = session.stats.snapshot();
        assert_eq!(
            (
                st.rx_malformed,
                st.rx_ring_dropped,
                st.tx_ring_dropped,
                st.tx_dropped
            ),
            (0, 0, 0, 0),
            "the healthy session dropped something: {st:?}"
        );
        (session, sent.len())
    }
}

/// A global log capture (the server's tasks run on the runtime's threads, so a thread-local subscriber
/// would not see them).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(w.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// QUIC endpoint

/// 150 connections complete the handshake, send KeepAlive on the control stream and never attach: all are
/// closed (code 3) within 10 s of the attach deadline, memory stays bounded, and a call on the same
/// endpoint loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatters_are_closed_after_the_deadline_while_a_call_flows() {
    const SQUATTERS: usize = 150;
    let deadline = Duration::from_secs(1);
    let server = server_with(|c| {
        c.attach_deadline = deadline;
        c.max_connections_per_address = 2 * SQUATTERS;
    })
    .await;
    let call = Call::start(&server).await;
    let rss_before = rss_bytes();
    let client = raw_client(&server, |_| {});
    let addr = server.local_addr().unwrap();
    let mut handshakes = Vec::new();
    for _ in 0..SQUATTERS {
        let client = client.clone();
        handshakes.push(tokio::spawn(async move {
            let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            // Reads the acks (so the control stream never stalls) and keeps sending KeepAlive.
            tokio::spawn(async move {
                let mut b = [0u8; 256];
                while let Ok(Some(_)) = recv.read(&mut b).await {}
            });
            tokio::spawn(async move {
                for nonce in 0u64.. {
                    if send
                        .write_all(&frame(&ControlMessage::KeepAlive { nonce }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            conn
        }));
    }
    let mut conns = Vec::new();
    for h in handshakes {
        conns.push(h.await.unwrap());
    }
    let last_handshake = Instant::now();
    let mut rss_max = rss_bytes();
    let took = wait_until(
        deadline + Duration::from_secs(10),
        "every squatter closed within 10 s of the deadline",
        || {
            rss_max = rss_max.max(rss_bytes());
            conns.iter().all(|c| c.close_reason().is_some())
        },
    )
    .await;
    for c in &conns {
        assert_eq!(
            app_close_code(c),
            Some(VarInt::from_u32(CLOSE_ATTACH_DEADLINE)),
            "{:?}",
            c.close_reason()
        );
    }
    let st = server.stats();
    assert_eq!(st.closed_attach_deadline, SQUATTERS as u64, "{st:?}");
    let growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "{SQUATTERS} squatters closed {:?} after the last handshake ({took:?} of waiting); retries {}; RSS growth {:.1} MB",
        last_handshake.elapsed(),
        st.retries,
        growth as f64 / 1e6
    );
    assert!(growth < 30 << 20, "RSS grew by {growth} bytes");
    // The call's connection attached in time and is still there.
    assert!(call.edge.quic().close_reason().is_none());
    wait_until(Duration::from_secs(2), "the call keeps flowing", || {
        call.received() > 0
    })
    .await;
    let (_, n) = call.finish().await;
    assert!(n > 50, "only {n} packets in the call");
    wait_until(
        Duration::from_secs(5),
        "the squatters' slots are freed",
        || server.stats().connections_open == 1,
    )
    .await;
}

/// Connection caps refuse at `Incoming`, before the handshake, and count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_before_the_handshake() {
    let server = server_with(|c| c.max_connections_per_address = 3).await;
    let client = raw_client(&server, |_| {});
    let addr = server.local_addr().unwrap();
    let mut ok = Vec::new();
    for _ in 0..3 {
        ok.push(client.connect(addr, "localhost").unwrap().await.unwrap());
    }
    let refused = client.connect(addr, "localhost").unwrap().await;
    assert!(
        matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))),
        "{refused:?}"
    );
    let st = server.stats();
    assert_eq!(
        (st.connections_refused, st.connections_refused_per_address),
        (1, 1)
    );
    // A slot frees when a connection ends. The server counts a connection as open once its side of the handshake
    // is done, which can be after the client's: all three must count before one closes, or "two open" would be
    // seen with all three slots still held.
    wait_until(Duration::from_secs(5), "three connections open", || {
        server.stats().connections_open == 3
    })
    .await;
    ok.pop().unwrap().close(VarInt::from_u32(0), b"");
    wait_until(Duration::from_secs(5), "slot freed", || {
        server.stats().connections_open == 2
    })
    .await;
    client.connect(addr, "localhost").unwrap().await.unwrap();
}

/// Handshakes faster than the configured rate get a stateless Retry; the client completes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_bursts_get_a_retry() {
    let server = server_with(|c| {
        c.handshake_rate = 1;
        c.handshake_burst = 2;
    })
    .await;
    let addr = server.local_addr().unwrap();
    for _ in 0..6 {
        // A fresh client each time: no NEW_TOKEN from an earlier connection validates its address.
        let client = raw_client(&server, |_| {});
        client.connect(addr, "localhost").unwrap().await.unwrap();
    }
    wait_until(Duration::from_secs(5), "6 connections counted", || {
        server.stats().connections == 6
    })
    .await;
    let st = server.stats();
    assert!(st.retries >= 3, "{st:?}");
}

/// An edge that stops reading its control stream is closed within the write timeout (code 5), its
/// session is released, and a new connection attaches the same session at once; a call on another
/// connection of the endpoint loses nothing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_edge_is_closed_and_its_session_attaches_elsewhere_at_once() {
    let write_timeout = Duration::from_millis(500);
    // A queue deep enough for the whole flood: here the write timeout decides (the queue-full case is
    // `stalled_edge_that_fills_the_queue_is_closed_at_once`).
    let server = server_with(|c| {
        c.control_write_timeout = write_timeout;
        c.control_queue_capacity = 1024;
    })
    .await;
    let call = Call::start(&server).await;
    let (mut session, token) = add_session(&server);
    // A peer with a tiny control-stream receive window: once it stops reading, the MP's writes block.
    let client = raw_client(&server, |t| {
        t.stream_receive_window(VarInt::from_u32(1024));
    });
    let conn = client
        .connect(server.local_addr().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(&ControlMessage::Attach {
        session_id: session.id,
        token: token.clone(),
        flows: flows(),
    }))
    .await
    .unwrap();
    let mut inbuf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = recv.read(&mut chunk).await.unwrap().unwrap();
        inbuf.extend_from_slice(&chunk[..n]);
        if let Decoded::Message(m, _) = control::decode_frame(&inbuf).unwrap() {
            assert_eq!(
                m,
                ControlMessage::AttachOk {
                    session_id: session.id
                }
            );
            break;
        }
    }
    assert!(matches!(
        session.events.recv().await,
        Some(SessionEvent::Attached { .. })
    ));
    // Stop reading; ask for 400 acks: some fill the window, the rest wait in the MP's queue, and the
    // blocked write times out.
    let flood = Instant::now();
    for nonce in 0..400u64 {
        send.write_all(&frame(&ControlMessage::KeepAlive { nonce }))
            .await
            .unwrap();
    }
    let took = wait_until(
        write_timeout + Duration::from_secs(2),
        "the stalled edge is closed",
        || conn.close_reason().is_some(),
    )
    .await;
    let closed_after = flood.elapsed();
    assert_eq!(
        app_close_code(&conn),
        Some(VarInt::from_u32(CLOSE_CONTROL_STALLED)),
        "{:?}",
        conn.close_reason()
    );
    assert!(
        closed_after <= write_timeout + Duration::from_secs(1),
        "closed {closed_after:?} after the flood (waited {took:?})"
    );
    assert_eq!(server.stats().closed_control_stalled, 1);
    // A new connection attaches the same session at once: no "session busy".
    let edge = EdgeConnection::connect(&edge_config(&server))
        .await
        .unwrap();
    let t = Instant::now();
    edge.attach(session.id, &token, flows()).await.unwrap();
    let attach_time = t.elapsed();
    assert!(
        attach_time < Duration::from_secs(1),
        "attach took {attach_time:?}"
    );
    eprintln!(
        "stalled edge closed {closed_after:?} after it stopped reading; re-attach took {attach_time:?}"
    );
    let mut saw = Vec::new();
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_secs(2), session.events.recv()).await
    {
        let attached = matches!(ev, SessionEvent::Attached { .. });
        saw.push(ev);
        if attached {
            break;
        }
    }
    assert!(
        matches!(
            saw.as_slice(),
            [SessionEvent::Detached { .. }, SessionEvent::Attached { .. }]
        ),
        "{saw:?}"
    );
    call.finish().await;
}

/// Wrong tokens: each connection is closed (code 4) after 3 refusals, and the refusal log writes at most
/// one line a second, with a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_flood_closes_after_n_and_logs_rate_limited() {
    let logs = logs();
    let server = server_with(|_| {}).await;
    let (session, _) = add_session(&server);
    let call = Call::start(&server).await;
    let start = Instant::now();
    let log_lines = || {
        let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("attach refused"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let lines_before = log_lines().len();
    // Connections of 3 wrong-token attaches each, until the rate-limited log has written a second line
    // (at least 1 s after the first), which reports the refusals suppressed in between.
    let mut conns = 0u64;
    while log_lines().len() < lines_before + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no second log line"
        );
        conns += 1;
        let edge = EdgeConnection::connect(&edge_config(&server))
            .await
            .unwrap();
        for i in 0..3 {
            let bad = vec![b'x'; 64];
            let id = if i == 1 { Uuid::new_v4() } else { session.id };
            match edge.attach(id, &bad, flows()).await {
                Err(NetError::Peer { code, .. }) => assert_eq!(code, error_code::ATTACH_REFUSED),
                other => panic!("attach {i}: {other:?}"),
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(3), edge.quic().closed())
            .await
            .unwrap();
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == VarInt::from_u32(CLOSE_REFUSED_ATTACHES)),
            "{closed:?}"
        );
    }
    let elapsed = start.elapsed();
    let st = server.stats();
    assert_eq!(st.refused, 3 * conns);
    assert_eq!(st.closed_refused_attaches, conns);
    let lines = log_lines()[lines_before..].to_vec();
    let counts: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            l.split("count=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    eprintln!(
        "{} refusals in {elapsed:?}: {} log lines reporting {counts:?}",
        3 * conns,
        lines.len()
    );
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 1,
        "{} lines in {elapsed:?}",
        lines.len()
    );
    assert_eq!(counts.len(), lines.len());
    assert_eq!(counts[0], 1);
    // The second line reports every refusal since the first.
    assert!(
        counts[1] > 1 && counts.iter().sum::<u64>() <= 3 * conns,
        "{counts:?}"
    );
    call.finish().await;
}

/// A peer that stops reading and lets the MP's control queue fill is closed at once (code 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_edge_that_fills_the_queue_is_closed_at_once() {
    let server = server_with(|c| {
        c.control_queue_capacity = 8;
        c.control_write_timeout = Duration::from_secs(30);
    })
    .await;
    let client = raw_client(&server, |t| {
        t.stream_receive_window(VarInt::from_u32(1024));
    });
    let conn = client
        .connect(server.local_addr().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let flood = Instant::now();
    for nonce in 0..400u64 {
        if send
            .write_all(&frame(&ControlMessage::KeepAlive { nonce }))
            .await
            .is_err()
        {
            break;
        }
    }
    wait_until(Duration::from_secs(5), "closed", || {
        conn.close_reason().is_some()
    })
    .await;
    assert_eq!(
        app_close_code(&conn),
        Some(VarInt::from_u32(CLOSE_CONTROL_STALLED))
    );
    assert!(flood.elapsed() < Duration::from_secs(5));
    assert_eq!(server.stats().closed_control_stalled, 1);
}

// ---------------------------------------------------------------------------------------------------------
// RTP/UDP endpoint

/// An RTP/UDP socket polled the way its media worker does (on the test's clock), keeping the sequence numbers
/// of the packets it delivered.
struct UdpEdge {
    sock: RtpUdpSocket,
    origin: Instant,
    got: Vec<u16>,
}

impl UdpEdge {
    fn bind(remote: Option<SocketAddr>) -> Self {
        let origin = Instant::now();
        let config = RtpUdpConfig {
            remote,
            ..RtpUdpConfig::opus("127.0.0.1:0".parse().unwrap(), 96)
        };
        Self {
            sock: RtpUdpSocket::bind(&config, origin.elapsed()).unwrap(),
            origin,
            got: Vec::new(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr()
    }

    /// One tick's read: everything queued.
    fn poll(&mut self) {
        let mut buf = [0u8; 1500];
        let got = &mut self.got;
        self.sock
            .poll_rx(self.origin.elapsed(), &mut buf, usize::MAX, |pkt, _| {
                got.push(RtpPacket::parse(pkt).unwrap().sequence);
            });
    }

    /// Reads the socket, then its statistics.
    fn stats(&mut self) -> SessionStatsSnapshot {
        self.poll();
        self.sock.stats().snapshot()
    }

    /// The sequence numbers delivered since the last call.
    fn drain(&mut self) -> Vec<u16> {
        self.poll();
        std::mem::take(&mut self.got)
    }
}

/// Sends one packet from the session and returns who got it within 500 ms: (a, b).
async fn who_gets_replies(s: &mut UdpEdge, a: &UdpSocket, b: &UdpSocket, seq: u16) -> (bool, bool) {
    let now = s.origin.elapsed();
    assert!(s.sock.send(&rtp(96, seq, 0x5E5), now, now));
    let mut buf = [0u8; 1500];
    let mut got = |sock: &UdpSocket| {
        let mut got = false;
        while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
            got |= RtpPacket::parse(&buf[..n]).is_ok_and(|p| p.sequence == seq);
        }
        got
    };
    let start = Instant::now();
    let (mut ga, mut gb) = (false, false);
    while start.elapsed() < Duration::from_millis(500) && !(ga || gb) {
        ga |= got(a);
        gb |= got(b);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Whatever else arrives for the other peer shortly after.
    tokio::time::sleep(Duration::from_millis(20)).await;
    (ga || got(a), gb || got(b))
}

/// With a fixed remote, a stranger's RTP never reaches the session (100 of 100 dropped and counted).
#[tokio::test]
async fn stranger_rtp_never_reaches_a_fixed_remote_session() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = UdpEdge::bind(Some(peer.local_addr().unwrap()));
    let to = s.local_addr();
    for seq in 0..100u16 {
        stranger.send_to(&rtp(96, seq, 0xBAD), to).await.unwrap();
    }
    for seq in 0..10u16 {
        peer.send_to(&rtp(96, seq, 0x600D), to).await.unwrap();
    }
    wait_until(Duration::from_secs(5), "all 110 packets seen", || {
        let st = s.stats();
        st.rx_wrong_source + st.rx_packets == 110
    })
    .await;
    let st = s.stats();
    assert_eq!((st.rx_wrong_source, st.rx_packets), (100, 10));
    assert_eq!(s.drain(), (0..10).collect::<Vec<_>>());
}

/// Symmetric RTP: a stranger's 3-packet in-sequence burst is dropped and does not redirect the session;
/// the same stream continuing from a new port (NAT rebinding) is followed after 4 packets.
#[tokio::test]
async fn symmetric_session_resists_a_burst_and_follows_nat_rebinding() {
    let mut s = UdpEdge::bind(None);
    let to = s.local_addr();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for seq in 0..10u16 {
        peer.send_to(&rtp(96, seq, 0x600D), to).await.unwrap();
    }
    wait_until(Duration::from_secs(5), "peer latched", || {
        s.stats().rx_packets == 10
    })
    .await;
    for seq in 10..13u16 {
        stranger.send_to(&rtp(96, seq, 0x600D), to).await.unwrap();
    }
    wait_until(Duration::from_secs(5), "burst dropped", || {
        s.stats().rx_wrong_source == 3
    })
    .await;
    assert_eq!(s.drain(), (0..10).collect::<Vec<_>>());
    assert_eq!(
        who_gets_replies(&mut s, &peer, &stranger, 1).await,
        (true, false)
    );
    assert_eq!(s.stats().source_changes, 0);

    // The peer's NAT rebinds: the same stream (SSRC, sequence) continues from a new port.
    let rebound = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for seq in 10..20u16 {
        rebound.send_to(&rtp(96, seq, 0x600D), to).await.unwrap();
    }
    wait_until(Duration::from_secs(5), "rebinding followed", || {
        let st = s.stats();
        st.rx_packets == 10 + 7 && st.rx_wrong_source == 3 + 3
    })
    .await;
    assert_eq!(s.stats().source_changes, 1);
    // The first 3 from the new port were held back; from the 4th on the session follows.
    assert_eq!(s.drain(), (13..20).collect::<Vec<_>>());
    assert_eq!(
        who_gets_replies(&mut s, &rebound, &peer, 2).await,
        (true, false)
    );
}

/// A garbage flood at the QUIC port and at a neighbour session's RTP port (5000 datagrams/s, the rate of
/// 60k in 12 s, for 4 s): the healthy call loses nothing, the neighbour counts every flood datagram, the
/// QUIC endpoint's own counters stay clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_leaves_a_healthy_call_intact() {
    let server = server_with(|_| {}).await;
    let call = Call::start(&server).await;
    let mut neighbour = UdpEdge::bind(None);
    let neighbour_peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for seq in 0..5u16 {
        neighbour_peer
            .send_to(&rtp(96, seq, 0x0E16), neighbour.local_addr())
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(5), "neighbour latched", || {
        neighbour.stats().rx_packets == 5
    })
    .await;
    let targets = [server.local_addr().unwrap(), neighbour.local_addr()];
    let flood = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sent = [0u64; 2];
        let start = Instant::now();
        // 5000 datagrams/s in bursts of 50 every 10 ms, for 4 s.
        for burst in 0..400u32 {
            for i in 0..50usize {
                let t = i % 2;
                let len = 1 + (next() % 300) as usize;
                let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if t == 1 && i % 10 == 1 {
                    // Some well-formed RTP of the neighbour's payload type, from a stranger.
                    d = rtp(96, next() as u16, next() as u32);
                }
                if sock.send_to(&d, targets[t]).is_ok() {
                    sent[t] += 1;
                }
            }
            let due = Duration::from_millis(10 * u64::from(burst + 1));
            if let Some(w) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(w);
            }
        }
        sent
    });
    // The neighbour's worker reads its socket at its 20 ms ticks meanwhile.
    while !flood.is_finished() {
        neighbour.poll();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = flood.join().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the neighbour counted every flood datagram",
        || {
            let st = neighbour.stats();
            // What the kernel's queue could not hold (a tick that came late under load) counts too.
            st.rx_malformed
                + st.rx_wrong_source
                + st.rx_unexpected
                + st.rx_rtcp
                + st.rx_kernel_dropped
                == sent[1]
        },
    )
    .await;
    let nst = neighbour.stats();
    assert_eq!(nst.rx_packets, 5, "flood entered the neighbour: {nst:?}");
    let qst = server.stats();
    assert_eq!((qst.malformed, qst.unknown_flow), (0, 0), "{qst:?}");
    let (_, n) = call.finish().await;
    eprintln!(
        "flood: {} datagrams at the QUIC port, {} at the neighbour ({nst:?}); the call got all {n} packets",
        sent[0], sent[1]
    );
    assert!(n > 150, "only {n} packets in the call");
}
