//! Accepting connections, and the endpoint's limits.
//!
//! Every limit is applied to quinn's `Incoming` — before the handshake, so a refused or retried attempt
//! costs the endpoint no connection state:
//! 1. **caps**: connections open or in handshake, in all ([`ServerConfig::max_connections`]) and per source
//!    IP address ([`ServerConfig::max_connections_per_address`]); beyond them the attempt is refused
//!    (`Incoming::refuse`, a CONNECTION_REFUSED close) and counted;
//! 2. **stateless Retry**: when handshakes come faster than [`ServerConfig::handshake_rate`] (a token bucket
//!    with [`ServerConfig::handshake_burst`]), a peer whose address is not validated yet gets a Retry
//!    packet (`Incoming::retry`), so spoofed source addresses cannot make the endpoint hold handshakes;
//! 3. **handshake timeout**: a handshake not done within [`ServerConfig::handshake_timeout`] is dropped.
//!
//! An admitted attempt holds a [`Permit`] — its share of the caps and its wake-up slot — until the
//! connection ends. Log lines that a peer can provoke are rate-limited by [`LogWindow`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ServerConfig, Shared, connection};
use crate::stats::inc;

/// A log rate limit (sans-IO): at most one line per window; lines in between are counted and the count is
/// reported with the next line.
#[derive(Debug, Clone)]
pub struct LogWindow {
    window: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogWindow {
    /// At most one line per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(n)` when a line may be written now, reporting `n` events (this one and those
    /// suppressed since the last line); `None` when it is suppressed (and counted).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.window => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                let n = self.suppressed + 1;
                self.suppressed = 0;
                Some(n)
            }
        }
    }
}

/// A token bucket for handshakes (sans-IO).
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: None,
        }
    }

    /// Takes a token at `now`; false when the rate is exceeded.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if let Some(t) = self.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connection caps and wake-up slots.
#[derive(Debug)]
pub(crate) struct Limits {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    per_address: HashMap<IpAddr, usize>,
    /// Free wake-up slots; the number taken is the number of connections held.
    free_slots: Vec<usize>,
    handshakes: Bucket,
}

/// Why an attempt is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerAddress,
}

/// An admitted connection's share of the caps and its wake-up slot; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    ip: IpAddr,
    pub(crate) slot: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.wake.set_in_use(self.slot, false);
        let mut st = self.shared.limits.lock();
        if let Some(n) = st.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_address.remove(&self.ip);
            }
        }
        st.free_slots.push(self.slot);
    }
}

impl Limits {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        let n = config.max_connections.max(1);
        Self {
            max_total: n,
            max_per_address: config.max_connections_per_address.max(1),
            state: Mutex::new(LimitState {
                per_address: HashMap::new(),
                // Popped from the end: lowest slots first.
                free_slots: (0..n).rev().collect(),
                handshakes: Bucket::new(config.handshake_rate, config.handshake_burst),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a handshake token; false when handshakes come faster than the configured rate.
    fn take_handshake(&self, now: Instant) -> bool {
        self.lock().handshakes.take(now)
    }

    /// Admits a connection from `ip` if the caps allow.
    fn admit(&self, shared: &Arc<Shared>, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut st = self.lock();
        let held = self.max_total - st.free_slots.len();
        if held >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = st.per_address.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        let slot = st.free_slots.pop().ok_or(Refusal::Total)?;
        *st.per_address.entry(ip).or_insert(0) += 1;
        drop(st);
        shared.wake.set_in_use(slot, true);
        Ok(Permit {
            shared: shared.clone(),
            ip,
            slot,
        })
    }
}

/// Accepts connections until the endpoint closes.
pub(super) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let mut refused_log = LogWindow::new(Duration::from_secs(1));
    let mut retry_log = LogWindow::new(Duration::from_secs(1));
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let now = Instant::now();
        let permit = match shared.limits.admit(&shared, remote.ip()) {
            Ok(p) => p,
            Err(why) => {
                inc(&shared.stats.connections_refused);
                if why == Refusal::PerAddress {
                    inc(&shared.stats.connections_refused_per_address);
                }
                if let Some(n) = refused_log.hit(now) {
                    tracing::warn!(%remote, cap = ?why, count = n, "connection refused: connection cap reached ({n} since the last report)");
                }
                incoming.refuse();
                continue;
            }
        };
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && !shared.limits.take_handshake(now)
        {
            drop(permit);
            inc(&shared.stats.retries);
            if let Some(n) = retry_log.hit(now) {
                tracing::info!(%remote, count = n, "handshakes above the configured rate: stateless Retry ({n} since the last report)");
            }
            // Fails only if the attempt cannot be retried, which `may_retry` ruled out.
            let _ = incoming.retry();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let timeout = shared.config.handshake_timeout;
            let conn = match incoming.accept() {
                Ok(connecting) => tokio::time::timeout(timeout, connecting).await,
                Err(e) => Ok(Err(e)),
            };
            match conn {
                Ok(Ok(conn)) => {
                    inc(&shared.stats.connections);
                    inc(&shared.stats.connections_open);
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = id, %remote, "edge connected");
                    let reason = connection::run(id, conn, shared.clone(), permit.slot).await;
                    tracing::debug!(conn = id, %remote, %reason, "edge connection ended");
                    // The caps' share goes back before the connection stops counting as open: whoever sees the
                    // count drop (a test, an operator's retry) finds the slot free.
                    drop(permit);
                    shared
                        .stats
                        .connections_open
                        .fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    drop(permit);
                    inc(&shared.stats.handshakes_failed);
                    tracing::debug!(%remote, error = %e, "handshake failed");
                }
                Err(_) => {
                    drop(permit);
                    inc(&shared.stats.handshakes_failed);
                    tracing::debug!(%remote, "handshake timed out");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_window_writes_one_line_a_second_with_a_count() {
        let t0 = Instant::now();
        let mut w = LogWindow::new(Duration::from_secs(1));
        assert_eq!(w.hit(t0), Some(1));
        for i in 1..100u64 {
            assert_eq!(w.hit(t0 + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(w.hit(t0 + Duration::from_millis(1000)), Some(100));
        assert_eq!(w.hit(t0 + Duration::from_millis(1001)), None);
        assert_eq!(w.hit(t0 + Duration::from_millis(5000)), Some(2));
    }

    #[test]
    fn bucket_admits_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms at 10/s refills one token.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        let mut zero = Bucket::new(0, 5);
        assert!(!zero.take(t0));
    }
}
