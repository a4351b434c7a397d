//! `RedisRegistry` against a real `redis-server` (started here on a free port, no persistence): the reservation
//! script is atomic under concurrent placers, reservations turn active with the heartbeat, everything expires.
//! Skips without `redis-server` — and fails when `CI=true`.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediaproc_fleet::{
    Heartbeat, NodeRecord, NodeState, RedisRegistry, Refusal, Registry, Reservation, Ttls,
};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<Server> {
    let Some(binary) = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is missing (Debian package `redis-server`) and CI=true"
        );
        eprintln!("skipping: redis-server is not installed (Debian package `redis-server`)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server(child, port))
}

fn beat(id: &str, capacity: u64, active: u64, sessions: &[String]) -> Heartbeat {
    Heartbeat {
        record: NodeRecord {
            id: id.to_owned(),
            api_url: format!("http://{id}:8080"),
            mp_uri: format!("quic://{id}:4433/MediaProcessor"),
            state: NodeState::Serving,
            capacity,
            active,
            load: 0.1,
            version: "test".to_owned(),
            updated_unix_ms: mediaproc_fleet::unix_ms(),
        },
        sessions: sessions.to_vec(),
        released: sessions.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_script_is_atomic_and_everything_expires() {
    let Some(server) = redis() else { return };
    let ttls = Ttls {
        node_ms: 600,
        reservation_ms: 800,
        session_ms: 60_000,
    };
    let registry = Arc::new(
        RedisRegistry::new(&format!("redis://127.0.0.1:{}/0", server.1), "t:", ttls).unwrap(),
    );
    registry.heartbeat(&beat("a", 10, 2, &[])).await.unwrap();

    // 50 placers at once for 8 free slots: exactly 8 win.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("s{i}");
            let answer = registry
                .reserve("a", &session, mediaproc_fleet::unix_ms())
                .await
                .unwrap();
            (session, answer)
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        let (session, answer) = task.await.unwrap();
        match answer {
            Reservation::Reserved { .. } => won.push(session),
            Reservation::Refused(refusal) => assert_eq!(refusal, Refusal::Full),
        }
    }
    assert_eq!(won.len(), 8, "{won:?}");
    let nodes = registry.nodes(mediaproc_fleet::unix_ms()).await.unwrap();
    assert_eq!((nodes[0].record.active, nodes[0].reserved), (2, 8));
    assert_eq!(
        registry.lookup(&won[0]).await.unwrap().as_deref(),
        Some("a")
    );

    // The node reports three of them as its own: they leave the reservations, active counts them.
    registry
        .heartbeat(&beat("a", 10, 5, &won[..3]))
        .await
        .unwrap();
    let nodes = registry.nodes(mediaproc_fleet::unix_ms()).await.unwrap();
    assert_eq!((nodes[0].record.active, nodes[0].reserved), (5, 5));
    // A draining node refuses.
    let mut draining = beat("a", 10, 5, &won[..3]);
    draining.record.state = NodeState::Draining;
    registry.heartbeat(&draining).await.unwrap();
    assert_eq!(
        registry
            .reserve("a", "late", mediaproc_fleet::unix_ms())
            .await
            .unwrap(),
        Reservation::Refused(Refusal::Draining)
    );

    // Silence: the record, the unreported reservations and their keys expire; the reported sessions' keys live.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        registry
            .nodes(mediaproc_fleet::unix_ms())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        registry
            .reserve("a", "x", mediaproc_fleet::unix_ms())
            .await
            .unwrap(),
        Reservation::Refused(Refusal::Gone)
    );
    assert_eq!(registry.lookup(&won[7]).await.unwrap(), None);
    assert_eq!(
        registry.lookup(&won[0]).await.unwrap().as_deref(),
        Some("a")
    );
    registry.forget("a", &won[0]).await.unwrap();
    assert_eq!(registry.lookup(&won[0]).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_an_error_within_the_timeout_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = RedisRegistry::new(
        &format!("redis://127.0.0.1:{port}/0"),
        "t:",
        Ttls::default(),
    )
    .unwrap();
    let started = Instant::now();
    assert!(registry.heartbeat(&beat("a", 1, 0, &[])).await.is_err());
    assert!(registry.nodes(mediaproc_fleet::unix_ms()).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}
