//! The fleet (issue 12) end to end: a real `redis-server` and 3 `mediaproc serve --fleet` processes on this
//! machine, driven through their control APIs, with RTP audio on a sample of the calls.
//!
//! In the order: a burst of 300 creations, a drain in the middle of a run, SIGKILL of a node, a Redis
//! restart, a rolling restart under continuous arrivals. The scenarios run one at a time (a lock), so 2 cores are
//! not shared by 15 daemons. Without `redis-server` the tests skip with a message — and fail when `CI=true`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "fleet-test-api-token";
const SECRET: &str = "fleet-test-shared-secret";

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_server() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is missing (Debian package `redis-server`) and CI=true: the fleet tests must run"
        );
        eprintln!(
            "skipping the fleet tests: redis-server is not installed (Debian package `redis-server`)"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on a free port, without persistence; killed on drop.
struct Redis {
    binary: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(binary: std::path::PathBuf) -> Redis {
        let mut redis = Redis {
            binary,
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts it on the same port and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `mediaproc serve --fleet` process.
struct Node {
    id: String,
    api: String,
    mp_uri: String,
    child: Child,
}

impl Node {
    fn start(id: &str, redis: &str, capacity: usize) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mediaproc"))
            .args(["serve", "--api", "127.0.0.1:0", "--media", "127.0.0.1:0"])
            .args(["--workers", "1", "--fleet", redis, "--node-id", id])
            .args([
                "--capacity",
                &capacity.to_string(),
                "--drain-deadline",
                "60",
            ])
            .env("MEDIAPROC_API_TOKEN", TOKEN)
            .env("MEDIAPROC_FLEET_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut api, mut mp_uri) = (None, None);
        let mut line = String::new();
        while (api.is_none() || mp_uri.is_none()) && stdout.read_line(&mut line).unwrap() > 0 {
            if let Some(url) = line.trim().strip_prefix("control API") {
                api = Some(url.trim().to_owned());
            }
            if let Some(uri) = line.trim().strip_prefix("mpUri") {
                mp_uri = Some(uri.trim().to_owned());
            }
            line.clear();
        }
        // Keep reading so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Node {
            id: id.to_owned(),
            api: api.expect("serve printed its control API"),
            mp_uri: mp_uri.expect("serve printed its mpUri"),
            child,
        }
    }

    fn signal(&self, signal: &str) {
        assert!(
            Command::new("kill")
                .args([signal, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the process to exit; its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "node {} did not exit within {within:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn nodes_seen(api: &str) -> Vec<Value> {
    let body: Value = client()
        .get(format!("{api}/v1/fleet/nodes"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["nodes"].as_array().cloned().unwrap_or_default()
}

/// Until `api` sees exactly `ids` as SERVING nodes; the time it took.
async fn wait_for_nodes(api: &str, ids: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let nodes = nodes_seen(api).await;
        let mut serving: Vec<&str> = nodes
            .iter()
            .filter(|n| n["state"] == "SERVING")
            .filter_map(|n| n["id"].as_str())
            .collect();
        serving.sort_unstable();
        let mut want = ids.to_vec();
        want.sort_unstable();
        if serving == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{api} sees {serving:?}, not {want:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A session as `POST /v1/sessions` answered it.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    mp_uri: String,
    rtp: SocketAddr,
}

async fn create(api: &str) -> Result<Session, (u16, String)> {
    let response = client()
        .post(format!("{api}/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"bot": "echo", "rtp": {}}))
        .send()
        .await
        .map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    if status != 201 {
        return Err((status, body.to_string()));
    }
    Ok(Session {
        id: body["sessionId"].as_str().unwrap().to_owned(),
        mp_uri: body["mpUri"].as_str().unwrap().to_owned(),
        rtp: body["rtp"]["local"].as_str().unwrap().parse().unwrap(),
    })
}

async fn status_of(method: reqwest::Method, api: &str, id: &str) -> u16 {
    client()
        .request(method, format!("{api}/v1/sessions/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post(api: &str, path: &str, body: Value) -> u16 {
    client()
        .post(format!("{api}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A call's audio: 20 ms RTP packets (Opus silence) to the session's RTP/UDP edge, the echo counted as it comes
/// back. `gap` is the longest silence between two echoed packets after the first.
struct Audio {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    gap_us: Arc<AtomicU64>,
}

impl Audio {
    async fn start(target: SocketAddr) -> Audio {
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let gap_us = Arc::new(AtomicU64::new(0));
        let (s, st) = (socket.clone(), stop.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut i: u32 = 0;
            while !st.load(Ordering::Relaxed) {
                let mut packet = vec![0x80, 96];
                packet.extend_from_slice(&(i as u16).to_be_bytes());
                packet.extend_from_slice(&(i.wrapping_mul(320)).to_be_bytes());
                packet.extend_from_slice(&0x5eed_u32.to_be_bytes());
                // A 20 ms Opus CELT frame of silence.
                packet.extend_from_slice(&[0xf8, 0xff, 0xfe]);
                let _ = s.send_to(&packet, target).await;
                i += 1;
                tokio::time::sleep_until(start + Duration::from_millis(20) * i).await;
            }
        });
        let (r, g, st) = (received.clone(), gap_us.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut last: Option<Instant> = None;
            while !st.load(Ordering::Relaxed) {
                let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf))
                        .await
                else {
                    continue;
                };
                let now = Instant::now();
                if let Some(last) = last {
                    g.fetch_max((now - last).as_micros() as u64, Ordering::Relaxed);
                }
                last = Some(now);
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        Audio {
            stop,
            received,
            gap_us,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `n` more echoed packets came back.
    async fn wait_more(&self, n: u64, within: Duration) {
        self.wait_total(self.received() + n, within).await;
    }

    /// Waits until `n` echoed packets came back in all.
    async fn wait_total(&self, n: u64, within: Duration) {
        let started = Instant::now();
        while self.received() < n {
            assert!(
                started.elapsed() < within,
                "audio stalled: {} echoed packets",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn gap(&self) -> Duration {
        Duration::from_micros(self.gap_us.load(Ordering::Relaxed))
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Longest gap allowed in a call's echoed audio: a jitter buffer's worth, not a dropout.
const MAX_AUDIO_GAP: Duration = Duration::from_millis(400);

fn fleet(redis: &Redis, capacities: &[usize]) -> Vec<Node> {
    capacities
        .iter()
        .enumerate()
        .map(|(i, &capacity)| Node::start(&format!("node-{i}"), &redis.url(), capacity))
        .collect()
}

/// A Redis, three nodes of capacity 50 registered, and 30 sessions created round-robin through them.
async fn three_nodes_with_30_sessions(
    binary: std::path::PathBuf,
) -> (Redis, Vec<Node>, Vec<Session>) {
    let redis = Redis::start(binary);
    let nodes = fleet(&redis, &[50, 50, 50]);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(10)).await;
    let mut sessions = Vec::new();
    for i in 0..30 {
        sessions.push(create(&nodes[i % 3].api).await.unwrap());
    }
    (redis, nodes, sessions)
}

fn ids(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

fn owner<'a>(nodes: &'a [Node], session: &Session) -> &'a Node {
    nodes.iter().find(|n| n.mp_uri == session.mp_uri).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_creations_spreads_by_capacity_share_and_audio_flows() {
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let redis = Redis::start(binary);
    let capacities = [100, 100, 200];
    let nodes = fleet(&redis, &capacities);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(10)).await;

    // 300 creations, 10 at a time, each sent to any node in turn.
    let started = Instant::now();
    let apis: Vec<String> = nodes.iter().map(|n| n.api.clone()).collect();
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let apis = apis.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for k in 0..30 {
                let api = &apis[(worker + k) % apis.len()];
                made.push(create(api).await.expect("a creation was refused"));
            }
            made
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.extend(task.await.unwrap());
    }
    let burst = started.elapsed();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for session in &sessions {
        *per_node
            .entry(owner(&nodes, session).id.as_str())
            .or_default() += 1;
    }
    let total: usize = capacities.iter().sum();
    println!("burst of 300 in {burst:?}: {per_node:?} (capacities {capacities:?})");
    for (node, &capacity) in nodes.iter().zip(&capacities) {
        let got = per_node.get(node.id.as_str()).copied().unwrap_or(0);
        let share = 300.0 * capacity as f64 / total as f64;
        assert!(got <= capacity, "{} over capacity: {got}", node.id);
        assert!(
            (got as f64 - share).abs() <= share * 0.1,
            "{} got {got}, its share is {share}: {per_node:?}",
            node.id
        );
    }
    // Every placement is counted in `/metrics`: here, or on another node.
    let mut placed = 0;
    for node in &nodes {
        let text = client()
            .get(format!("{}/metrics", node.api))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "mediaproc_fleet_placed_here_total",
            "mediaproc_fleet_placed_remote_total",
        ] {
            placed += text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from {}'s /metrics", node.id));
        }
    }
    assert_eq!(placed, 300, "placements counted in /metrics");
    // The registry agrees: active (and reserved) within capacity.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for node in nodes_seen(&nodes[0].api).await {
        assert!(
            node["active"].as_u64().unwrap() + node["reserved"].as_u64().unwrap()
                <= node["capacity"].as_u64().unwrap(),
            "{node}"
        );
    }

    // Every call's audio flows: RTP to each of the 300, each echoed back (25 packets, half a second).
    let sample: Vec<&Session> = sessions.iter().collect();
    let audio_started = Instant::now();
    let mut audio = Vec::new();
    for session in &sample {
        audio.push(Audio::start(session.rtp).await);
    }
    for call in &audio {
        call.wait_total(25, Duration::from_secs(15)).await;
    }
    println!(
        "audio: {} calls echoed (25+ packets each) within {:?}, packets back {:?}",
        audio.len(),
        audio_started.elapsed(),
        audio.iter().map(Audio::received).collect::<Vec<_>>()
    );
    drop(audio);

    // Every session answers GET and DELETE through any node (forwarded to its own).
    for (i, session) in sessions.iter().enumerate() {
        let api = &nodes[i % nodes.len()].api;
        if i % 10 == 0 {
            assert_eq!(status_of(reqwest::Method::GET, api, &session.id).await, 200);
        }
        assert_eq!(
            status_of(reqwest::Method::DELETE, api, &session.id).await,
            204
        );
    }
    assert_eq!(
        status_of(reqwest::Method::GET, &nodes[1].api, &sessions[0].id).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_gets_nothing_keeps_its_calls_exits_when_empty_and_undrain_restores_it() {
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let (_redis, mut nodes, mut sessions) = three_nodes_with_30_sessions(binary).await;
    let drained = nodes[2].id.clone();
    let mine: Vec<Session> = sessions
        .iter()
        .filter(|s| owner(&nodes, s).id == drained)
        .cloned()
        .collect();
    assert!(!mine.is_empty());
    let mut audio = Vec::new();
    for session in mine.iter().take(5) {
        audio.push(Audio::start(session.rtp).await);
    }
    for call in &audio {
        call.wait_more(10, Duration::from_secs(10)).await;
    }

    // Drain it: /health/ready says so, no new session lands on it (sent to every node, itself included).
    assert_eq!(
        post(&nodes[2].api, "/v1/drain", json!({"deadlineSeconds": 60})).await,
        202
    );
    let ready = client()
        .get(format!("{}/health/ready", nodes[2].api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        client()
            .get(format!("{}/health/live", nodes[2].api))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for i in 0..30 {
        let session = create(&nodes[i % 3].api).await.unwrap();
        assert_ne!(
            owner(&nodes, &session).id,
            drained,
            "a session landed on the draining node"
        );
        sessions.push(session);
    }
    // Its calls go on, without a gap.
    for call in &audio {
        call.wait_more(50, Duration::from_secs(10)).await;
        assert!(
            call.gap() < MAX_AUDIO_GAP,
            "a gap of {:?} in a drained node's call",
            call.gap()
        );
    }

    // Undrain: it takes sessions again.
    assert_eq!(post(&nodes[2].api, "/v1/undrain", json!({})).await, 200);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(5)).await;
    let mut landed = 0;
    for i in 0..15 {
        let session = create(&nodes[i % 3].api).await.unwrap();
        landed += usize::from(owner(&nodes, &session).id == drained);
        sessions.push(session);
    }
    assert!(landed > 0, "nothing landed on the undrained node");

    // Drain again; it exits once its last call ended (DELETE through another node), with success.
    assert_eq!(post(&nodes[2].api, "/v1/drain", json!({})).await, 202);
    let gaps: Vec<Duration> = audio.iter().map(Audio::gap).collect();
    drop(audio);
    let on_drained: Vec<&Session> = sessions
        .iter()
        .filter(|s| owner(&nodes, s).id == drained)
        .collect();
    for session in &on_drained {
        assert_eq!(
            status_of(reqwest::Method::DELETE, &nodes[0].api, &session.id).await,
            204
        );
    }
    let ended = Instant::now();
    let status = nodes[2].wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    println!(
        "drain: {} calls on the drained node, longest echo gap {:?}, exited {:?} after its last call",
        on_drained.len(),
        gaps.iter().max(),
        ended.elapsed()
    );
    wait_for_nodes(&nodes[0].api, &ids(&nodes[..2]), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_placement_within_5_s_and_only_its_sessions_are_lost() {
    // (and a drain's deadline ends the calls left, which are then ended, not lost)
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let (_redis, mut nodes, mut sessions) = three_nodes_with_30_sessions(binary).await;
    let killed = nodes[1].id.clone();
    nodes[1].signal("-KILL");
    nodes[1].wait_exit(Duration::from_secs(5));
    let gone = wait_for_nodes(
        &nodes[0].api,
        &[nodes[0].id.as_str(), nodes[2].id.as_str()],
        Duration::from_secs(5),
    )
    .await;
    println!("SIGKILL: node out of placement after {gone:?}");
    let mut lost = 0;
    for session in &sessions {
        let status = status_of(reqwest::Method::GET, &nodes[2].api, &session.id).await;
        if owner(&nodes, session).id == killed {
            assert_eq!(status, 410, "a killed node's session must be reported lost");
            lost += 1;
        } else {
            assert_eq!(status, 200, "another node's session must live");
        }
    }
    assert!(lost > 0);
    // New sessions go to the living.
    for i in 0..10 {
        let api = &nodes[if i % 2 == 0 { 0 } else { 2 }].api;
        let session = create(api).await.unwrap();
        assert_ne!(owner(&nodes, &session).id, killed);
        sessions.push(session);
    }

    // A drain's deadline: node 2 ends the calls it still has after 1 s and exits 0; those calls were ended, not
    // lost — they answer 404 from any node.
    let last = nodes[2].id.clone();
    let ended: Vec<Session> = sessions
        .iter()
        .filter(|s| owner(&nodes, s).id == last)
        .cloned()
        .collect();
    assert!(!ended.is_empty());
    assert_eq!(
        post(&nodes[2].api, "/v1/drain", json!({"deadlineSeconds": 1})).await,
        202
    );
    let status = tokio::task::block_in_place(|| nodes[2].wait_exit(Duration::from_secs(10)));
    assert!(status.success(), "{status}");
    for session in &ended {
        assert_eq!(
            status_of(reqwest::Method::GET, &nodes[0].api, &session.id).await,
            404
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_drops_no_call_and_nodes_reregister_within_2_s() {
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start(binary);
    let nodes = fleet(&redis, &[50, 50, 50]);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(10)).await;
    let mut sessions = Vec::new();
    for i in 0..15 {
        sessions.push(create(&nodes[i % 3].api).await.unwrap());
    }
    let mut audio = Vec::new();
    for session in sessions.iter().take(6) {
        audio.push(Audio::start(session.rtp).await);
    }
    for call in &audio {
        call.wait_more(10, Duration::from_secs(10)).await;
    }

    redis.stop();
    // While it is away: the calls go on, creation places locally (the default), lookups of other nodes fail.
    for call in &audio {
        call.wait_more(25, Duration::from_secs(10)).await;
    }
    let local = create(&nodes[0].api).await.unwrap();
    assert_eq!(owner(&nodes, &local).id, nodes[0].id);
    sessions.push(local);

    redis.restart();
    let back = Instant::now();
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(2)).await;
    let registered = back.elapsed();
    println!("Redis restart: every node registered again {registered:?} after Redis came back");
    assert!(registered <= Duration::from_secs(2));
    // No call dropped: every session answers through any node (the heartbeats wrote their keys again).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for session in &sessions {
        assert_eq!(
            status_of(reqwest::Method::GET, &nodes[1].api, &session.id).await,
            200
        );
    }
    for call in &audio {
        call.wait_more(25, Duration::from_secs(10)).await;
        assert!(call.gap() < MAX_AUDIO_GAP, "gap {:?}", call.gap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_continuous_arrivals_refuses_nothing_and_drops_no_call() {
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let redis = Redis::start(binary);
    let mut nodes = fleet(&redis, &[40, 40, 40]);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(10)).await;

    // The load balancer: the APIs of the nodes not draining (as a Service follows readiness). The nodes drain in
    // turn — by SIGTERM, by `mediaproc drain --wait`, by the API — exit once empty, and start again with their id.
    let targets = Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|n| n.api.clone()).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let failed_ends = Arc::new(AtomicU64::new(0));
    // Arrivals every 100 ms; each call lasts 1.5 s and is hung up through whichever node the balancer picks.
    let arrivals = {
        let (targets, stop, refused, created, failed_ends) = (
            targets.clone(),
            stop.clone(),
            refused.clone(),
            created.clone(),
            failed_ends.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let pick = |n: usize| {
                    let t = targets.lock().unwrap();
                    t[n % t.len()].clone()
                };
                match create(&pick(n)).await {
                    Ok(session) => {
                        created.fetch_add(1, Ordering::Relaxed);
                        let (targets, failed_ends) = (targets.clone(), failed_ends.clone());
                        calls.push(tokio::spawn(async move {
                            let audio = Audio::start(session.rtp).await;
                            tokio::time::sleep(Duration::from_millis(1_500)).await;
                            let gap = audio.gap();
                            drop(audio);
                            // Hung up through a node the balancer has now.
                            let api = {
                                let t = targets.lock().unwrap();
                                t[n % t.len()].clone()
                            };
                            let status =
                                status_of(reqwest::Method::DELETE, &api, &session.id).await;
                            if status != 204 || gap >= MAX_AUDIO_GAP {
                                eprintln!("call {} ended with {status}, gap {gap:?}", session.id);
                                failed_ends.fetch_add(1, Ordering::Relaxed);
                            }
                        }));
                    }
                    Err(err) => {
                        eprintln!("creation refused: {err:?}");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for call in calls {
                call.await.unwrap();
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for i in 0..nodes.len() {
        let (id, api) = (nodes[i].id.clone(), nodes[i].api.clone());
        targets.lock().unwrap().retain(|t| *t != api);
        // Each way of draining once: SIGTERM, `mediaproc drain --wait` (Kubernetes' preStop), the API.
        match i {
            0 => nodes[i].signal("-TERM"),
            1 => {
                let drain = tokio::task::block_in_place(|| {
                    Command::new(env!("CARGO_BIN_EXE_mediaproc"))
                        .args(["drain", "--wait", "--api", &api])
                        .env("MEDIAPROC_API_TOKEN", TOKEN)
                        .output()
                        .unwrap()
                });
                let said = String::from_utf8_lossy(&drain.stdout).into_owned();
                assert!(drain.status.success(), "{said}");
                assert!(said.contains("drained: the daemon exited"), "{said}");
            }
            _ => assert_eq!(post(&api, "/v1/drain", json!({})).await, 202),
        }
        let status = tokio::task::block_in_place(|| nodes[i].wait_exit(Duration::from_secs(15)));
        assert!(status.success(), "{status}");
        // The new pod, same node id.
        let node = tokio::task::block_in_place(|| Node::start(&id, &redis.url(), 40));
        let fresh = node.api.clone();
        nodes[i] = node;
        wait_for_nodes(
            &nodes[(i + 1) % 3].api,
            &ids(&nodes),
            Duration::from_secs(10),
        )
        .await;
        targets.lock().unwrap().push(fresh);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    arrivals.await.unwrap();
    let (created, refused, failed) = (
        created.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed_ends.load(Ordering::Relaxed),
    );
    println!(
        "rolling restart of 3 nodes in {:?}: {created} calls created, {refused} refused, {failed} dropped",
        started.elapsed()
    );
    assert!(created > 20);
    assert_eq!(
        refused, 0,
        "a creation was refused during the rolling restart"
    );
    assert_eq!(failed, 0, "a call was dropped during the rolling restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediaproc_load_fleet_drives_calls_through_every_node() {
    let Some(binary) = redis_server() else { return };
    let _serial = SERIAL.lock().await;
    let redis = Redis::start(binary);
    let nodes = fleet(&redis, &[20, 20, 20]);
    wait_for_nodes(&nodes[0].api, &ids(&nodes), Duration::from_secs(10)).await;
    let api = nodes[0].api.trim_start_matches("http://").to_owned();
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_mediaproc"))
            .args(["load", "--fleet", "--api", &api, "--edge", "rtp"])
            .args(["--calls", "30", "--seconds", "4"])
            .env("MEDIAPROC_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    });
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_node = said
        .lines()
        .find(|l| l.contains("calls per node"))
        .expect("load --fleet prints the calls per node");
    println!("{said}");
    // Power of two choices: about a third each (never the fuller of the two drawn), not exactly.
    for node in &nodes {
        let count: usize = per_node
            .split(&format!("\"{}\": ", node.mp_uri))
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!((7..=13).contains(&count), "{per_node}");
    }
    assert!(said.contains("loss 0.00 %"), "{said}");
}
