//! `mediaproc load --peer gstreamer|ffmpeg`: the same load edge (RTP/UDP, a socket per call, the same pre-encoded
//! packets and probes) against N third-party processes doing mediaproc's job at its codec settings — one process
//! per stream, as these tools run — so their CPU per stream-tick and round trip sit next to the daemon's, measured
//! the same way (`/proc` CPU time of every peer process, tone-burst probes).
//!
//! - `echo`: decode (jitter buffer, Opus), 16 kHz mono, Opus encode at 32 kbit/s, complexity 5, 20 ms, no FEC (the
//!   daemon's defaults on a clean path), RTP back to the call's socket.
//! - `record`: decode to 16 kHz mono and write a WAV file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mediaproc_callsim::edge::{EdgeTarget, OPUS_PAYLOAD_TYPE};
use mediaproc_callsim::load::{LoadCall, LoadCounters, LoadTransport, rtp_socket, run_load};
use mediaproc_pipeline::CLASSIC_DECODER_COMPLEXITY;
use uuid::Uuid;

use super::report::{Lateness, Measured, StreamTotals};
use super::{QUIET, WARMUP_SECONDS, bare, call_ticks, cpu_share_text, daemon};
use crate::{Failure, LoadArgs, output};

/// The peer processes of a run; killed and their scratch directory removed when dropped.
struct Fleet {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> Result<u16, Failure> {
    std::net::UdpSocket::bind(("127.0.0.1", 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|err| Failure::invalid(format!("no free UDP port: {err}")))
}

fn gstreamer(port: u16, reply: SocketAddr, bot: &str, wav: &Path) -> Command {
    let caps = format!(
        "application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int){OPUS_PAYLOAD_TYPE}"
    );
    let head = format!(
        "udpsrc address=127.0.0.1 port={port} caps=\"{caps}\" ! rtpjitterbuffer latency=20 ! rtpopusdepay \
         ! opusdec ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=16000,channels=1"
    );
    let pipeline = if bot == "record" {
        format!("{head} ! wavenc ! filesink location={}", wav.display())
    } else {
        format!(
            "{head} ! opusenc bitrate=32000 complexity=5 audio-type=voice frame-size=20 inband-fec=false \
             ! rtpopuspay pt={OPUS_PAYLOAD_TYPE} ! udpsink host={} port={}",
            reply.ip(),
            reply.port()
        )
    };
    let mut command = Command::new("gst-launch-1.0");
    command.arg("-q");
    // gst-launch takes the pipeline as words; quoting inside is handled by its own parser.
    command.args(pipeline.split(' ').filter(|w| !w.is_empty()));
    command
}

fn ffmpeg(
    port: u16,
    reply: SocketAddr,
    bot: &str,
    dir: &Path,
    i: usize,
) -> Result<Command, Failure> {
    let sdp = dir.join(format!("peer-{i}.sdp"));
    std::fs::write(
        &sdp,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=load\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {OPUS_PAYLOAD_TYPE}\r\na=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2\r\n"
        ),
    )
    .map_err(|err| Failure::invalid(format!("{}: {err}", sdp.display())))?;
    let mut command = Command::new("ffmpeg");
    command.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-protocol_whitelist",
        "file,udp,rtp",
    ]);
    command.arg("-i").arg(&sdp);
    command.args(["-ar", "16000", "-ac", "1"]);
    if bot == "record" {
        command.arg("-y").arg(dir.join(format!("peer-{i}.wav")));
    } else {
        command.args([
            "-c:a",
            "libopus",
            "-b:a",
            "32000",
            "-compression_level",
            "5",
            "-application",
            "voip",
            "-frame_duration",
            "20",
            "-payload_type",
        ]);
        command.arg(OPUS_PAYLOAD_TYPE.to_string());
        command.args(["-f", "rtp"]);
        command.arg(format!("rtp://{}:{}", reply.ip(), reply.port()));
    }
    Ok(command)
}

/// Runs the load against N peer processes of `args.peer`.
pub async fn run(args: &LoadArgs) -> Result<Measured, Failure> {
    let fail = |what: &str, err: String| Failure::invalid(format!("{what}: {err}"));
    if args.edge != "rtp" {
        return Err(Failure::usage("--peer gstreamer|ffmpeg needs --edge rtp"));
    }
    if !matches!(args.bot.as_str(), "echo" | "record") {
        return Err(Failure::usage(
            "--peer gstreamer|ffmpeg runs the echo or record job (--bot echo|record)",
        ));
    }
    let duplex = args.bot == "echo";
    let bare = bare::codec_us_per_call_tick(duplex, CLASSIC_DECODER_COMPLEXITY)
        .map_err(|err| fail("bare codec", err))?;
    let dir = std::env::temp_dir().join(format!("mediaproc-load-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| fail("scratch directory", err.to_string()))?;
    let mut fleet = Fleet {
        children: Vec::with_capacity(args.calls),
        dir: dir.clone(),
    };
    let mut calls = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let socket = rtp_socket()
            .await
            .map_err(|err| fail("RTP socket", err.to_string()))?;
        let reply = socket
            .local_addr()
            .map_err(|err| fail("RTP socket", err.to_string()))?;
        let port = free_udp_port()?;
        let wav = dir.join(format!("peer-{i}.wav"));
        let mut command = match args.peer.as_str() {
            "gstreamer" => gstreamer(port, reply, &args.bot, &wav),
            _ => ffmpeg(port, reply, &args.bot, &dir, i)?,
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                fail(
                    &format!("cannot start {}", args.peer),
                    format!("{err} (is it installed? Debian: gstreamer1.0-tools -plugins-base -plugins-good, ffmpeg)"),
                )
            })?;
        fleet.children.push(child);
        calls.push(LoadCall {
            target: EdgeTarget {
                server: reply,
                server_name: String::new(),
                session_id: Uuid::nil(),
                token: String::new(),
                render_context: Uuid::nil(),
                source_context: None,
            },
            rtp: Some((socket, SocketAddr::from(([127, 0, 0, 1], port)))),
        });
    }
    // Let every process bind its port before the first packet.
    tokio::time::sleep(Duration::from_millis(500 + 10 * args.calls as u64)).await;
    if let Some(i) = fleet
        .children
        .iter_mut()
        .position(|c| matches!(c.try_wait(), Ok(Some(_))))
    {
        return Err(fail(
            &format!("{} peer {i}", args.peer),
            "exited at start (run its command by hand to see why)".into(),
        ));
    }
    let pids: Vec<u32> = fleet.children.iter().map(Child::id).collect();
    let cpu_total = || -> Option<u64> {
        pids.iter()
            .map(|&p| daemon::cpu(p).map(|c| c.total_us))
            .sum()
    };
    let rss_total = || -> Option<u64> { pids.iter().map(|&p| daemon::rss_bytes(p)).sum() };

    if !QUIET.load(Ordering::Relaxed) {
        output::line(&format!(
            "load         {} {} {} processes on rtp, {} s, bare libopus {bare:.1} µs per call-tick",
            args.calls, args.peer, args.bot, args.seconds
        ));
    }
    let counters = Arc::new(LoadCounters::default());
    let duration = Duration::from_secs(args.seconds);
    let edge = {
        let (counters, calls) = (counters.clone(), calls.clone());
        tokio::spawn(async move { run_load(LoadTransport::Rtp, &calls, duration, counters).await })
    };
    let cores = daemon::cores();
    let started = Instant::now();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let (mut window_start, mut window_end) = (None, None);
    let mut last = (0u64, 0u64, cpu_total());
    let mut rss_peak = 0u64;
    for s in 1..=args.seconds {
        second.tick().await;
        let cpu = cpu_total();
        let (sent, received) = (
            counters.sent.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
        );
        rss_peak = rss_peak.max(rss_total().unwrap_or(0));
        if !QUIET.load(Ordering::Relaxed) {
            let share = cpu_share_text(cpu, last.2, cores);
            output::line(&format!(
                "{s:>4} s       in {:>6} pkt/s  out {:>6} pkt/s  {} CPU {share} of {cores} core(s){}",
                sent - last.0,
                received - last.1,
                args.peer,
                if s <= WARMUP_SECONDS {
                    "  (start-up)"
                } else {
                    ""
                },
            ));
        }
        if s == WARMUP_SECONDS {
            window_start = Some((started.elapsed(), cpu));
        }
        if s == args.seconds {
            window_end = Some((started.elapsed(), cpu));
        }
        last = (sent, received, cpu);
    }
    let report = edge
        .await
        .map_err(|err| fail("load edge", err.to_string()))?
        .map_err(|err| fail("load edge", err.to_string()))?;
    let bare = bare.min(
        bare::codec_us_per_call_tick(duplex, CLASSIC_DECODER_COMPLEXITY)
            .map_err(|err| fail("bare codec", err))?,
    );
    let (cpu_per_tick, window_s) = match (window_start, window_end) {
        (Some((t0, Some(c0))), Some((t1, Some(c1)))) => {
            let secs = (t1 - t0).as_secs_f64();
            (
                Some(c1.saturating_sub(c0) as f64 / call_ticks(args.calls, secs)),
                secs,
            )
        }
        _ => (None, 0.0),
    };
    drop(fleet);
    Ok(Measured {
        calls: args.calls,
        seconds: args.seconds,
        bot: args.bot.clone(),
        edge: "rtp".to_owned(),
        peer: args.peer.clone(),
        calls_per_connection: 1,
        cores,
        window_s,
        daemon_cpu_us_per_call_tick: cpu_per_tick,
        cpu_by_thread: Vec::new(),
        bare_codec_us_per_call_tick: bare,
        decoder_complexity: CLASSIC_DECODER_COMPLEXITY,
        machine_stalls: None,
        late_ticks: None,
        lateness: Lateness::default(),
        packet_to_worker: Lateness::default(),
        tick_to_bot: Lateness::default(),
        bot_to_sent: Lateness::default(),
        rtt_ms: report.rtt_ms,
        sent: counters.sent.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
        send_errors: counters.send_errors.load(Ordering::Relaxed),
        totals: StreamTotals::default(),
        memory_per_call_bytes: Some(rss_peak / args.calls as u64),
        bots_echoed: 0,
        bots_failed: 0,
    })
}
