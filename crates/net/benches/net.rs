//! Benchmarks of the network path.
//!
//! * criterion micro-benchmarks: RTP parse/serialize, RoQ framing, control decoding, packet ring push+pop;
//! * loopback figures (printed, not asserted): CPU per datagram for 200 sessions on one QUIC connection,
//!   sent one by one (one task and one wake-up per call) vs batched (one task, one wake-up per tick), the
//!   receive (listen-only) direction, and one-way latency p50/p99 for 1 and 200 sessions.
//!
//! Run: `cargo bench -p mediaproc-net --bench net` (add `-- --quick` style criterion filters as usual;
//! set `MEDIAPROC_BENCH_SECS` to change the loopback run length, default 3 s per figure).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use mediaproc_net::{
    EdgeConfig, EdgeConnection, MediaServer, QuicSession, ServerConfig, ServerTrust, SessionSpec,
    packet_ring,
};
use mediaproc_wire::control::{
    Codec, ControlMessage, Direction, FlowDecl, MediaKind, NO_MSI, decode_frame,
};
use mediaproc_wire::{RoqDatagram, RtpPacket};
use uuid::Uuid;

const OPUS_FRAME: usize = 80; // a typical 20 ms Opus voice packet at ~32 kbit/s
const TICK: Duration = Duration::from_millis(20);

fn rtp_bytes(seq: u16, payload: &[u8]) -> Vec<u8> {
    let p = RtpPacket::new(111, seq, u32::from(seq) * 960, 0x1234_5678, payload);
    let mut out = vec![0u8; p.encoded_len()];
    p.write(&mut out).unwrap();
    out
}

fn micro(c: &mut Criterion) {
    let pkt = rtp_bytes(1, &[0x55; OPUS_FRAME]);
    c.bench_function("rtp_parse", |b| {
        b.iter(|| RtpPacket::parse(black_box(&pkt)).unwrap().payload.len())
    });
    let payload = [0x55u8; OPUS_FRAME];
    let mut out = [0u8; 1500];
    c.bench_function("rtp_write", |b| {
        b.iter(|| {
            RtpPacket::new(111, 1, 960, 7, black_box(&payload))
                .write(&mut out)
                .unwrap()
        })
    });
    let mut dg = [0u8; 1500];
    let n = RoqDatagram {
        flow_id: 300,
        packet: &pkt,
    }
    .write(&mut dg)
    .unwrap();
    c.bench_function("roq_parse_then_rtp_parse", |b| {
        b.iter(|| {
            let d = RoqDatagram::parse(black_box(&dg[..n])).unwrap();
            RtpPacket::parse(d.packet).unwrap().sequence
        })
    });
    let mut frame = [0u8; 256];
    let fl = ControlMessage::Dtmf {
        session_id: Uuid::new_v4(),
        event: 3,
        duration_ms: 100,
    }
    .encode(&mut frame)
    .unwrap();
    c.bench_function("control_decode_dtmf", |b| {
        b.iter(|| decode_frame(black_box(&frame[..fl])).unwrap())
    });
    let (mut p, mut q) = packet_ring(64);
    let mut buf = [0u8; 1500];
    c.bench_function("ring_push_pop_rtp", |b| {
        b.iter(|| {
            p.push(1, 2, black_box(&pkt)).unwrap();
            q.pop(&mut buf).unwrap().len
        })
    });
}

/// CPU time so far of this process's live threads whose name starts with `prefix` ("" = all), from /proc.
fn thread_cpu(prefix: &str) -> Duration {
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !name.starts_with(prefix) {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// (MP network thread CPU, whole process CPU).
fn cpu_now() -> (Duration, Duration) {
    (thread_cpu(MP_THREAD), thread_cpu(""))
}

/// Name of the MP runtime's threads (the edge and the simulated workers run elsewhere).
const MP_THREAD: &str = "mp-net";

struct Cpu {
    mp_us: f64,
    total_us: f64,
}

fn per_datagram(start: (Duration, Duration), n: u64) -> Cpu {
    let (mp, total) = cpu_now();
    let n = n.max(1) as f64;
    Cpu {
        mp_us: (mp - start.0).as_secs_f64() * 1e6 / n,
        total_us: (total - start.1).as_secs_f64() * 1e6 / n,
    }
}

struct Setup {
    server: MediaServer,
    edge: Arc<EdgeConnection>,
    sessions: Vec<QuicSession>,
}

async fn setup(n: usize, mp: &tokio::runtime::Handle) -> Setup {
    // The MP endpoint runs on its own runtime (its tasks are spawned where it is bound).
    let server = mp
        .spawn(async {
            MediaServer::bind(ServerConfig::development("127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap()
        })
        .await
        .unwrap();
    let edge = EdgeConnection::connect(&EdgeConfig {
        server: server.local_addr().unwrap(),
        server_name: "localhost".into(),
        trust: ServerTrust::PinnedSha256(server.certificate_fingerprint()),
        keep_alive: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let mut sessions = Vec::new();
    for i in 0..n {
        let token = mediaproc_net::generate_token().unwrap().into_bytes();
        let s = server
            .add_session(SessionSpec {
                id: Uuid::new_v4(),
                token: token.clone(),
                render_contexts: vec![],
                source_contexts: vec![],
            })
            .unwrap();
        let flow = |flow_id, direction| FlowDecl {
            flow_id,
            direction,
            media: MediaKind::Audio,
            context: Uuid::new_v4(),
            msi: NO_MSI,
            payload_type: 111,
            codec: Codec::Opus,
        };
        let i = i as u64;
        edge.attach(
            s.id,
            &token,
            vec![
                flow(2 * i, Direction::Render),
                flow(2 * i + 1, Direction::Source),
            ],
        )
        .await
        .unwrap();
        sessions.push(s);
    }
    Setup {
        server,
        edge: Arc::new(edge),
        sessions,
    }
}

fn now_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
}

/// MP → edge: each tick every session sends one packet. Returns (datagrams, CPU per datagram µs, latency µs
/// samples). `batched`: one task pushes all sessions' packets and wakes the sender once per tick; otherwise
/// one task per session, each waking the sender for its own packet.
async fn send_path(
    n: usize,
    batched: bool,
    secs: f64,
    mp: tokio::runtime::Handle,
) -> (u64, Cpu, Vec<u64>) {
    let Setup {
        server,
        edge,
        sessions,
    } = setup(n, &mp).await;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // The edge measures one-way latency from the send timestamp carried in the payload.
    let rx = {
        let edge = edge.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok((_, pkt))) =
                    tokio::time::timeout(Duration::from_millis(100), edge.recv_packet()).await
                else {
                    continue;
                };
                if mediaproc_wire::roq::is_rtcp(&pkt) {
                    continue;
                }
                let p = RtpPacket::parse(&pkt).unwrap();
                let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                lat.push(now_ns(origin).saturating_sub(sent));
            }
            lat
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = cpu_now();
    let ticks = (secs / TICK.as_secs_f64()) as u64;
    let stats: Vec<_> = sessions.iter().map(|s| s.stats.clone()).collect();
    let before: u64 = stats.iter().map(|s| s.snapshot().tx_packets).sum();
    let mut payload = [0x55u8; OPUS_FRAME];
    if batched {
        let mut sessions = sessions;
        let start = tokio::time::Instant::now();
        let mut out = [0u8; 1500];
        for t in 0..ticks {
            tokio::time::sleep_until(start + TICK * t as u32).await;
            for (i, s) in sessions.iter_mut().enumerate() {
                payload[..8].copy_from_slice(&now_ns(origin).to_be_bytes());
                let len = RtpPacket::new(111, t as u16, t as u32 * 960, i as u32, &payload)
                    .write(&mut out)
                    .unwrap();
                s.tx.push(2 * i as u64 + 1, 0, &out[..len]).unwrap();
            }
            sessions[0].waker.wake();
        }
    } else {
        let mut tasks = Vec::new();
        for (i, mut s) in sessions.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                // Spread the sessions' phases over the tick, as independent calls would be.
                let start = tokio::time::Instant::now() + TICK * i as u32 / n as u32;
                let mut out = [0u8; 1500];
                let mut payload = [0x55u8; OPUS_FRAME];
                for t in 0..ticks {
                    tokio::time::sleep_until(start + TICK * t as u32).await;
                    payload[..8].copy_from_slice(&now_ns(origin).to_be_bytes());
                    let len = RtpPacket::new(111, t as u16, t as u32 * 960, i as u32, &payload)
                        .write(&mut out)
                        .unwrap();
                    s.tx.push(2 * i as u64 + 1, 0, &out[..len]).unwrap();
                    s.waker.wake();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent: u64 = stats.iter().map(|s| s.snapshot().tx_packets).sum::<u64>() - before;
    let cpu = per_datagram(cpu0, sent);
    stop.store(true, Ordering::Relaxed);
    let lat = rx.await.unwrap();
    mp.spawn(server.shutdown()).await.unwrap();
    (sent, cpu, lat)
}

/// Edge → MP (listen-only calls): each tick the edge sends one packet per session; a worker thread drains the
/// rings every 20 ms. Returns (datagrams, CPU per datagram µs, latency µs from edge send to ring arrival).
async fn receive_path(n: usize, secs: f64, mp: tokio::runtime::Handle) -> (u64, Cpu, Vec<u64>) {
    let Setup {
        server,
        edge,
        sessions,
    } = setup(n, &mp).await;
    let origin = server.clock_origin();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sessions = sessions;
            let mut lat = Vec::new();
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                for s in &mut sessions {
                    while let Some(m) = s.rx.pop(&mut buf) {
                        let p = RtpPacket::parse(&buf[..m.len]).unwrap();
                        let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                        lat.push(m.time_ns.saturating_sub(sent));
                    }
                }
                std::thread::sleep(TICK);
            }
            (
                lat,
                sessions
                    .iter()
                    .map(|s| s.stats.snapshot().rx_packets)
                    .sum::<u64>(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = cpu_now();
    let ticks = (secs / TICK.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now();
    let mut payload = [0x55u8; OPUS_FRAME];
    for t in 0..ticks {
        tokio::time::sleep_until(start + TICK * t as u32).await;
        for i in 0..n {
            payload[..8].copy_from_slice(&now_ns(origin).to_be_bytes());
            let pkt = rtp_bytes(t as u16, &payload);
            edge.send_packet(2 * i as u64, &pkt).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received: u64 = server.stats().datagrams_rx;
    let cpu = per_datagram(cpu0, received);
    stop.store(true, Ordering::Relaxed);
    let (lat, _) = worker.join().unwrap();
    mp.spawn(server.shutdown()).await.unwrap();
    (received, cpu, lat)
}

fn loopback_figures() {
    let secs: f64 = std::env::var("MEDIAPROC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // The MP's network shell on one thread of its own; the edge and the simulated session workers elsewhere.
    let mp = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(MP_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("edge")
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\n== loopback QUIC figures ({secs} s per run, 20 ms ticks, {OPUS_FRAME}-byte payloads; CPU per datagram of \
         the MP network thread, and of the whole process = MP + edge + simulated workers) =="
    );
    for (label, n, batched) in [
        (
            "send 200 sessions one-by-one (task+wake per call)",
            200,
            false,
        ),
        ("send 200 sessions batched (one wake per tick)", 200, true),
        ("send 1 session", 1, true),
    ] {
        let (sent, cpu, mut lat) = rt.block_on(send_path(n, batched, secs, mp.handle().clone()));
        println!(
            "{label:50}: {sent:6} dgrams, CPU MP {:6.2} us total {:6.2} us /dgram, one-way p50 {:7.1} us p99 {:7.1} us",
            cpu.mp_us,
            cpu.total_us,
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
    for n in [200usize, 1] {
        let (got, cpu, mut lat) = rt.block_on(receive_path(n, secs, mp.handle().clone()));
        println!(
            "{:50}: {got:6} dgrams, CPU MP {:6.2} us total {:6.2} us /dgram, one-way p50 {:7.1} us p99 {:7.1} us",
            format!("receive {n} session(s) (listen-only)"),
            cpu.mp_us,
            cpu.total_us,
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    micro(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench")
        || std::env::var_os("MEDIAPROC_BENCH_LOOPBACK").is_some()
    {
        loopback_figures();
    }
}
