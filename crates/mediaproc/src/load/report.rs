//! The report of a load run: a table on stdout and, with `--json`, the keys `docs/performance.md` describes.

use serde_json::{Value, json};

use crate::output;

/// Sums of the sessions' per-stream statistics (`stats.streams[]` on QUIC, `stats.rtpUdp.stream` on RTP/UDP).
#[derive(Debug, Default)]
pub struct StreamTotals {
    pub sessions: u64,
    pub received: u64,
    pub lost: u64,
    pub concealed: u64,
    pub underruns: u64,
    pub late: u64,
    pub overruns: u64,
    pub delay_ms_sum: u64,
    pub streams: u64,
    /// The lowest decoder complexity a session reported at the end (the daemon sheds it under load).
    pub decoder_complexity: Option<u8>,
}

impl StreamTotals {
    pub fn add(&mut self, stats: &Value) {
        self.sessions += 1;
        if let Some(c) = stats["decoderComplexity"].as_u64() {
            let c = c.min(10) as u8;
            self.decoder_complexity = Some(self.decoder_complexity.map_or(c, |m| m.min(c)));
        }
        self.overruns += stats["overruns"].as_u64().unwrap_or(0);
        let quic = stats["streams"].as_array().into_iter().flatten();
        let udp = stats["rtpUdp"]["stream"]
            .as_object()
            .map(|_| &stats["rtpUdp"]["stream"]);
        for stream in quic.chain(udp) {
            let n = |k: &str| stream[k].as_u64().unwrap_or(0);
            self.streams += 1;
            self.received += n("received");
            self.lost += n("lost");
            self.concealed += n("concealed");
            self.underruns += n("underruns");
            self.late += n("late");
            self.delay_ms_sum += n("playoutDelayMs");
        }
    }
}

/// A daemon latency histogram over the measured window, in ms: quantiles from the difference of two `/healthz`
/// readings of its buckets (`tickLateness`, `handOffs.*`; each quantile is its bucket's upper bound), and the
/// daemon's largest value since it started.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lateness {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    /// Values above 5 ms in the window (a bucket bound), `None` without readings.
    pub over_5ms: Option<u64>,
}

impl Lateness {
    pub fn between(start: &Value, end: &Value) -> Self {
        let counts = |v: &Value| -> Vec<u64> {
            v["counts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_u64().unwrap_or(0))
                .collect()
        };
        let bounds: Vec<f64> = end["bucketsUs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b.as_f64().unwrap_or(0.0) / 1000.0)
            .collect();
        let (c0, c1) = (counts(start), counts(end));
        let delta: Vec<u64> = c1
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(c0.get(i).copied().unwrap_or(0)))
            .collect();
        let max = end["maxMs"].as_f64();
        let total: u64 = delta.iter().sum();
        let quantile = |q: f64| -> Option<f64> {
            if total == 0 {
                return None;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, count) in delta.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    let bound = bounds.get(i).copied().or(max)?;
                    return Some(max.map_or(bound, |m| bound.min(m)));
                }
            }
            max
        };
        let over_5ms = (!bounds.is_empty()).then(|| {
            delta
                .iter()
                .enumerate()
                .filter(|(i, _)| bounds.get(*i).is_none_or(|&b| b > 5.0))
                .map(|(_, c)| c)
                .sum()
        });
        Self {
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max,
            over_5ms,
        }
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Measured {
    pub calls: usize,
    pub seconds: u64,
    pub bot: String,
    pub edge: String,
    /// Who served the calls: `mediaproc`, or a third-party peer (`gstreamer`, `ffmpeg`; one process per stream).
    pub peer: String,
    pub calls_per_connection: usize,
    pub cores: usize,
    /// Length of the measured window (after start-up), in s.
    pub window_s: f64,
    pub daemon_cpu_us_per_call_tick: Option<f64>,
    /// (thread name, µs per call-tick) of the daemon's threads.
    pub cpu_by_thread: Vec<(String, f64)>,
    pub bare_codec_us_per_call_tick: f64,
    /// The Opus decoder complexity of the bare baseline (the daemon's sessions' at the end of the run).
    pub decoder_complexity: u8,
    /// The machine's own stalls in the measured window (a sleeping probe thread of the load tool), if measured.
    pub machine_stalls: Option<super::stall::Stalls>,
    pub late_ticks: Option<u64>,
    pub lateness: Lateness,
    /// Packet arrival → the worker took it; tick deadline → frame in the bot's ring; the bot's frame taken at
    /// the tick → its packet handed to the socket.
    pub packet_to_worker: Lateness,
    pub tick_to_bot: Lateness,
    pub bot_to_sent: Lateness,
    pub rtt_ms: Vec<f64>,
    pub sent: u64,
    pub received: u64,
    pub send_errors: u64,
    pub totals: StreamTotals,
    pub memory_per_call_bytes: Option<u64>,
    pub bots_echoed: u64,
    pub bots_failed: u64,
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.1} ms"))
}

impl Measured {
    fn overhead_ratio(&self) -> Option<f64> {
        self.daemon_cpu_us_per_call_tick
            .map(|cpu| cpu / self.bare_codec_us_per_call_tick)
    }

    fn loss(&self) -> f64 {
        let expected = self.totals.received + self.totals.lost;
        if expected == 0 {
            0.0
        } else {
            self.totals.lost as f64 / expected as f64
        }
    }

    /// Packet in → frame to the bot, jitter-buffer hold excluded: the two hand-offs' quantiles added (each an upper
    /// bound of its stage).
    fn in_to_bot(&self) -> (Option<f64>, Option<f64>) {
        let add = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
        (
            add(self.packet_to_worker.p50, self.tick_to_bot.p50),
            add(self.packet_to_worker.p99, self.tick_to_bot.p99),
        )
    }

    fn rtt(&self) -> (Option<f64>, Option<f64>) {
        let mut sorted = self.rtt_ms.clone();
        sorted.sort_by(f64::total_cmp);
        (quantile(&sorted, 0.5), quantile(&sorted, 0.99))
    }

    pub fn print(&self) {
        let (p50, p99) = self.rtt();
        output::line("");
        output::line(&format!(
            "summary      {}: {} calls, {} bot, {} edge{}, {} s ({:.1} s measured), {} core(s)",
            self.peer,
            self.calls,
            self.bot,
            self.edge,
            if self.edge == "quic" {
                format!(", {} per connection", self.calls_per_connection)
            } else {
                String::new()
            },
            self.seconds,
            self.window_s,
            self.cores
        ));
        let rows = [
            (
                if self.peer == "mediaproc" {
                    "daemon CPU".to_owned()
                } else {
                    format!("{} CPU", self.peer)
                },
                self.daemon_cpu_us_per_call_tick.map_or(
                    "n/a (no process to measure: --daemon-pid)".to_owned(),
                    |v| format!("{v:.1} µs per call-tick"),
                ),
            ),
            (
                "bare libopus".to_owned(),
                format!(
                    "{:.1} µs per call-tick (same packets, this run, decoder complexity {})",
                    self.bare_codec_us_per_call_tick, self.decoder_complexity
                ),
            ),
            (
                "overhead ratio".to_owned(),
                self.overhead_ratio()
                    .map_or("n/a".to_owned(), |r| format!("{r:.2} × bare libopus")),
            ),
            (
                "tick lateness".to_owned(),
                format!(
                    "p50 ≤ {}  p99 ≤ {}  p99.9 ≤ {}  max {}",
                    ms(self.lateness.p50),
                    ms(self.lateness.p99),
                    ms(self.lateness.p999),
                    ms(self.lateness.max)
                ),
            ),
            (
                "late ticks".to_owned(),
                self.late_ticks
                    .map_or("n/a".to_owned(), |l| format!("{l} (> 5 ms late)")),
            ),
            (
                "machine stalls".to_owned(),
                self.machine_stalls.map_or("n/a".to_owned(), |m| {
                    format!(
                        "{} of {} probe wake-ups > 5 ms late, max {:.1} ms (a sleeping thread of this tool, not the daemon)",
                        m.late, m.wakeups, m.max_ms
                    )
                }),
            ),
            ("packet in → bot".to_owned(), {
                let (p50, p99) = self.in_to_bot();
                format!(
                    "p50 ≤ {}  p99 ≤ {}  (to the worker p99 ≤ {}, tick to the bot's ring p99 ≤ {}; jitter-buffer hold excluded)",
                    ms(p50),
                    ms(p99),
                    ms(self.packet_to_worker.p99),
                    ms(self.tick_to_bot.p99)
                )
            }),
            (
                "bot → packet out".to_owned(),
                format!(
                    "p50 ≤ {}  p99 ≤ {}  (the bot's frame taken at the tick, encoded, handed to the socket)",
                    ms(self.bot_to_sent.p50),
                    ms(self.bot_to_sent.p99)
                ),
            ),
            (
                "echo round trip".to_owned(),
                format!(
                    "p50 {}  p99 {}  ({} probes)",
                    ms(p50),
                    ms(p99),
                    self.rtt_ms.len()
                ),
            ),
            (
                "packets".to_owned(),
                format!(
                    "{} sent, {} send errors, {} back",
                    self.sent, self.send_errors, self.received
                ),
            ),
            (
                "streams".to_owned(),
                format!(
                    "loss {:.2} %, concealed {}, underruns {}, late {}, overruns for the bot {}",
                    self.loss() * 100.0,
                    self.totals.concealed,
                    self.totals.underruns,
                    self.totals.late,
                    self.totals.overruns
                ),
            ),
            (
                "memory".to_owned(),
                self.memory_per_call_bytes.map_or("n/a".to_owned(), |b| {
                    format!("{:.0} KiB per call", b as f64 / 1024.0)
                }),
            ),
        ];
        // A third-party peer has no daemon statistics: only what the edge and /proc measured.
        let daemon_only = [
            "tick lateness",
            "late ticks",
            "machine stalls",
            "packet in → bot",
            "streams",
        ];
        for (name, value) in rows {
            if self.peer != "mediaproc" && daemon_only.contains(&name.as_str()) {
                continue;
            }
            output::line(&format!("  {name:<18} {value}"));
        }
        if self.bot == "websocket" {
            output::line(&format!(
                "  {:<18} {} frames echoed, {} bots failed",
                "websocket bots", self.bots_echoed, self.bots_failed
            ));
        }
        if !self.cpu_by_thread.is_empty() {
            let threads: Vec<String> = self
                .cpu_by_thread
                .iter()
                .map(|(name, us)| format!("{name} {us:.1}"))
                .collect();
            output::line(&format!(
                "  {:<18} {} (µs per call-tick)",
                "by thread",
                threads.join(", ")
            ));
        }
    }

    pub fn json(&self) -> Value {
        let (p50, p99) = self.rtt();
        let (in50, in99) = self.in_to_bot();
        let stage = |l: &Lateness| json!({"p50": l.p50, "p99": l.p99, "max": l.max});
        json!({
            "calls": self.calls,
            "seconds": self.seconds,
            "bot": self.bot,
            "edge": self.edge,
            "peer": self.peer,
            "calls_per_connection": self.calls_per_connection,
            "cores": self.cores,
            "measured_seconds": self.window_s,
            "daemon_cpu_us_per_call_tick": self.daemon_cpu_us_per_call_tick,
            "daemon_cpu_by_thread_us_per_call_tick": self.cpu_by_thread.iter()
                .map(|(n, us)| (n.clone(), json!(us))).collect::<serde_json::Map<_, _>>(),
            "bare_codec_us_per_call_tick": self.bare_codec_us_per_call_tick,
            "decoder_complexity": self.decoder_complexity,
            "machine_stalls": self.machine_stalls.map(|m| json!({
                "probe_wakeups": m.wakeups, "late_over_5ms": m.late, "max_ms": m.max_ms})),
            "overhead_ratio": self.overhead_ratio(),
            "tick_lateness_ms": {
                "p50": self.lateness.p50,
                "p99": self.lateness.p99,
                "p999": self.lateness.p999,
                "max": self.lateness.max,
            },
            "late_ticks": self.late_ticks,
            "latency_ms": {
                "in_to_bot_p50": in50,
                "in_to_bot_p99": in99,
                "packet_to_worker": stage(&self.packet_to_worker),
                "tick_to_bot": stage(&self.tick_to_bot),
                "bot_to_sent": stage(&self.bot_to_sent),
                "echo_rtt_p50": p50,
                "echo_rtt_p99": p99,
                "echo_rtt_samples_ms": self.rtt_ms.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
            },
            "loss": self.loss(),
            "concealed": self.totals.concealed,
            "underruns": self.totals.underruns,
            "memory_per_call_bytes": self.memory_per_call_bytes,
            "packets": {"sent": self.sent, "send_errors": self.send_errors, "received": self.received},
        })
    }
}
