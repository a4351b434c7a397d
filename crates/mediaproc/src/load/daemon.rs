//! The daemon under load: a `mediaproc serve` this tool starts as a child process (or one given by `--api`), and
//! what Linux tells about its process: CPU time per thread and resident memory, read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Failure;

/// A daemon this tool talks to.
#[derive(Debug)]
pub struct Daemon {
    /// Control API address.
    pub api: std::net::SocketAddr,
    /// Its API token.
    pub token: String,
    /// Its process id, when known (started here, or `--daemon-pid`).
    pub pid: Option<u32>,
    child: Option<Child>,
    /// Scratch directory (configuration, log, recordings) of a daemon started here.
    pub dir: Option<PathBuf>,
}

/// Settings of a daemon this tool starts.
#[derive(Debug)]
pub struct Spawn {
    pub calls: usize,
    pub workers: usize,
    /// `worker_wake_coalesce_us` of the daemon.
    pub wake_coalesce_us: u64,
    /// `decoder_complexity` of the daemon.
    pub decoder_complexity: u8,
}

impl Daemon {
    /// Starts `mediaproc serve` (this executable) on loopback with free ports, sized for the run, and waits for it
    /// to print its addresses.
    pub fn spawn(settings: &Spawn) -> Result<Self, Failure> {
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            Failure::invalid(format!("cannot start the daemon: {what}: {err}"))
        };
        let dir = std::env::temp_dir().join(format!("mediaproc-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|err| fail("scratch directory", &err))?;
        let token = format!("load-{}", uuid::Uuid::new_v4().simple());
        let slack = settings.calls + 16;
        // Measure, do not refuse: the load thresholds only colour /healthz, and the endpoint limits are raised to
        // the run's size (a connection per call needs more than the per-address default of 64).
        let config = format!(
            "api = \"127.0.0.1:0\"\nmedia = \"127.0.0.1:0\"\napi_token = \"{token}\"\nworkers = {}\n\
             max_sessions = {slack}\noverloaded_at = 0.99\nheavily_loaded_at = 0.7\n\
             recordings_dir = \"{}\"\nquic_max_connections = {}\nquic_max_connections_per_address = {slack}\n\
             quic_handshake_rate = 10000\nquic_handshake_burst = 10000\nhttp_max_connections = {}\n\
             worker_wake_coalesce_us = {}\ndecoder_complexity = {}\n",
            settings.workers,
            dir.join("recordings").display(),
            slack.max(1024),
            (2 * slack).max(256),
            settings.wake_coalesce_us,
            settings.decoder_complexity,
        );
        let config_path = dir.join("mediaproc.toml");
        std::fs::write(&config_path, config).map_err(|err| fail("configuration", &err))?;
        let log = std::fs::File::create(dir.join("daemon.log")).map_err(|err| fail("log", &err))?;
        let exe = std::env::current_exe().map_err(|err| fail("own executable", &err))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|err| fail("spawn", &err))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(Failure::invalid("cannot start the daemon: no stdout"));
        };
        // `serve` prints `control API   http://ADDR` once it listens.
        let mut api = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("control API") {
                api = rest.trim().trim_start_matches("http://").parse().ok();
                break;
            }
        }
        let Some(api) = api else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            return Err(Failure::invalid(format!(
                "the daemon exited before it listened: {}",
                log.lines().last().unwrap_or("(no log)")
            )));
        };
        Ok(Self {
            api,
            token,
            pid: Some(child.id()),
            child: Some(child),
            dir: Some(dir),
        })
    }

    /// A daemon someone else runs.
    pub fn external(api: std::net::SocketAddr, token: String, pid: Option<u32>) -> Self {
        Self {
            api,
            token,
            pid,
            child: None,
            dir: None,
        }
    }

    /// Stops a daemon started here (SIGTERM, then a kill after 5 s) and removes its scratch directory.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: `kill` with a pid we spawned and still own (not yet reaped) and a valid signal number.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// CPU time of a process by thread name, from `/proc/<pid>/task/*/stat`.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    /// Total user + system time of all threads, in µs.
    pub total_us: u64,
    /// (thread name, µs), threads of the same name summed.
    pub by_name: Vec<(String, u64)>,
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Reads a process's CPU time by thread; `None` where `/proc` is not there (not Linux, process gone).
pub fn cpu(pid: u32) -> Option<CpuSample> {
    let hz = clock_ticks_per_second();
    let mut sample = CpuSample::default();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces or parentheses, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm: field 3 is `state`; utime and stime are fields 14 and 15 of the whole line.
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let ticks = utime.parse::<u64>().unwrap_or(0) + stime.parse::<u64>().unwrap_or(0);
        let us = ticks * 1_000_000 / hz;
        sample.total_us += us;
        match sample.by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += us,
            None => sample.by_name.push((name, us)),
        }
    }
    Some(sample)
}

/// Resident memory of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Cores this process may run on (the daemon inherits them).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
