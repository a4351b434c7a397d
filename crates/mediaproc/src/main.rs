//! `mediaproc`: the command line of the mediaproc runtime.
//!
//! Today: `blob` builds a media session configuration, `call-body` builds create-call request bodies for the
//! seed's scenarios, `inspect` reads and validates any Graph call document. The daemon (`serve`), the emulator
//! (`callsim`), `demo` and `load` come with the crates that implement them.
//!
//! Exit codes, for scripts: 0 success, 1 invalid input (the reason on stderr, one line per problem), 2 usage error.

mod blob_cmd;
mod call_body;
mod callsim;
mod demo;
mod drain_cmd;
mod inspect;
mod load;
mod output;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// Exit code for invalid input.
const EXIT_INVALID: u8 = 1;
/// Exit code for usage errors (clap uses it too).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "mediaproc",
    version,
    about = "Application-hosted media for calling bots: blobs, Graph call bodies, inspection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a media session configuration blob (compact JSON; --media-config for the appHostedMediaConfig).
    Blob(BlobArgs),
    /// Print a create-call request body (POST /app/calls) for one of the seed's scenarios.
    CallBody(CallBodyArgs),
    /// Recognise, summarise and validate a Graph call, notification, participant, media config or blob.
    Inspect(InspectArgs),
    /// Run the media-processor sidecar: control API, bot WebSocket and the QUIC media endpoint at mpUri.
    Serve(ServeArgs),
    /// The whole flow on one machine: daemon, emulated Graph and media edge, and a bot, for a short meeting.
    Demo(DemoArgs),
    /// The other side: an emulated Graph calls endpoint whose media edge speaks for participants.
    Callsim(CallsimArgs),
    /// Many calls against a daemon in its own process: its CPU per call-tick next to bare libopus, latency, losses.
    Load(LoadArgs),
    /// Drain a running daemon: no new session, its calls go on, it exits when the last ends or at the deadline.
    Drain(drain_cmd::DrainArgs),
    /// Revert a drain that has not completed: the daemon takes sessions again.
    Undrain(drain_cmd::UndrainArgs),
}

/// Flags of `mediaproc load`.
#[derive(Debug, Clone, Args)]
struct LoadArgs {
    /// Calls to run at once (`--sessions` is an alias).
    #[arg(long, visible_alias = "sessions", default_value_t = 50)]
    calls: usize,
    /// How long the calls stream (the first 2 s are start-up: shown, not measured).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Who answers: echo (duplex, built in), record (listen-only, writes WAV), silent (listen-only, no bot
    /// connected), websocket (an out-of-process echo bot over the bot WebSocket, driven by this tool).
    #[arg(long, default_value = "echo", value_parser = ["echo", "record", "silent", "websocket"])]
    bot: String,
    /// How the load edge reaches the daemon: quic (mpUri) or rtp (plain RTP/UDP, a socket per call).
    #[arg(long, default_value = "quic", value_parser = ["quic", "rtp"])]
    edge: String,
    /// Who serves the calls: mediaproc, or N third-party processes doing its job at its codec settings
    /// (gstreamer, ffmpeg: one process per stream; needs --edge rtp and --bot echo or record).
    #[arg(long, default_value = "mediaproc", value_parser = ["mediaproc", "gstreamer", "ffmpeg"])]
    peer: String,
    /// QUIC only: calls multiplexed on one connection (1 = a connection per call).
    #[arg(long, default_value_t = 200)]
    calls_per_connection: usize,
    /// Media worker threads of the daemon this tool starts (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// `worker_wake_coalesce_us` of the daemon this tool starts: sessions due within this many µs share a worker
    /// wake-up (less CPU, ticks up to that late).
    #[arg(long, default_value_t = 0)]
    worker_wake_coalesce_us: u64,
    /// `decoder_complexity` of the daemon this tool starts (0 = the classic Opus decoder, 7 = deep PLC + NoLACE,
    /// the daemon's default); the bare baseline decodes at the same complexity.
    #[arg(long, default_value_t = mediaproc_pipeline::DEFAULT_DECODER_COMPLEXITY, value_parser = clap::value_parser!(u8).range(0..=10))]
    decoder_complexity: u8,
    /// Use a daemon that is already running (its control API address) instead of starting one.
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// The daemon at --api is a fleet node (issue 12): the calls are placed across the fleet, each edge goes to its
    /// own node. Needs --api and --edge rtp; the daemon figures (CPU, ticks) are of the --api node only.
    #[arg(long)]
    fleet: bool,
    /// API token of the daemon given by --api [env: MEDIAPROC_API_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Process id of the daemon given by --api, to measure its CPU time and memory (Linux /proc).
    #[arg(long, value_name = "PID")]
    daemon_pid: Option<u32>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Raise the number of calls until one would see a late tick or the daemon passes --max-cpu of the cores, for
    /// each bot (record, silent, echo, websocket) on --edge; reports calls per core. A size that is only late is run
    /// up to 3 times and passes on one clean run (a VM's stalls do not repeat; a short CPU does).
    #[arg(long)]
    find_capacity: bool,
    /// The share of the cores the daemon may use at capacity.
    #[arg(long, default_value_t = 0.7)]
    max_cpu: f64,
}

/// Flags of `mediaproc callsim`.
#[derive(Debug, Args)]
struct CallsimArgs {
    /// Where the emulated Graph endpoint listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    graph: std::net::SocketAddr,
    /// Bearer token requests must carry [env: MEDIAPROC_GRAPH_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// SHA-256 fingerprint of the media processor's certificate (as `mediaproc serve` prints it); turns on the
    /// media edge for app-hosted calls.
    #[arg(long, value_name = "SHA256")]
    pin: Option<String>,
    /// Participants the edge speaks for.
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// How long each call's media lasts.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Probability that a packet to the daemon is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Random delay of each packet to the daemon, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// The edge's clock error in parts per million.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    drift_ppm: f64,
    /// How long a guest waits in the lobby.
    #[arg(long, default_value_t = 2000)]
    lobby_ms: u64,
    /// A WAV file for the participants to speak instead of synthetic voices (repeatable: one per participant).
    #[arg(long, value_name = "FILE")]
    wav: Vec<PathBuf>,
    /// Talk to a bot yourself: start the daemon and print the URL of its talk page (a browser tab over WebRTC);
    /// runs until Ctrl-C. The other flags do not apply.
    #[arg(long)]
    browser: bool,
    /// With --browser: the control API's port (0 = any free port).
    #[arg(long, default_value_t = 8080, requires = "browser")]
    port: u16,
}

/// Flags of `mediaproc demo`.
#[derive(Debug, Args)]
struct DemoArgs {
    /// The bot: echo (built in), record (built in, WAV files), websocket (wait for an external bot).
    #[arg(long, default_value = "echo", value_parser = ["echo", "record", "websocket"])]
    bot: String,
    /// How long the meeting lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Participants taking turns.
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// Probability that a packet from the edge to the daemon is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Random delay of each packet from the edge, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// The edge's clock error in parts per million.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    drift_ppm: f64,
    /// Where the record bot writes WAV files.
    #[arg(long, default_value = "recordings")]
    recordings: PathBuf,
    /// A WAV file for the participants to speak instead of synthetic voices (repeatable: one per participant).
    #[arg(long, value_name = "FILE")]
    wav: Vec<PathBuf>,
    /// Talk to a bot yourself: start the daemon and print the URL of its talk page (a browser tab over WebRTC);
    /// runs until Ctrl-C. The other flags do not apply.
    #[arg(long)]
    browser: bool,
    /// With --browser: the control API's port (0 = any free port).
    #[arg(long, default_value_t = 8080, requires = "browser")]
    port: u16,
}

/// Flags of `mediaproc serve` (they override the config file and the environment).
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control API and bot WebSocket address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// QUIC media endpoint address [default: 0.0.0.0:4433].
    #[arg(long, value_name = "ADDR")]
    media: Option<std::net::SocketAddr>,
    /// Host name put in mpUri and the development certificate [default: localhost].
    #[arg(long, value_name = "HOST")]
    public_host: Option<String>,
    /// PEM certificate chain for the media endpoint (with --key); a self-signed one otherwise.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Media worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Where the record bot writes WAV files [default: recordings].
    #[arg(long, value_name = "DIR")]
    recordings: Option<PathBuf>,
    /// Fleet membership (issue 12).
    #[command(flatten)]
    fleet: serve::FleetArgs,
}

/// Flags of `mediaproc blob`.
#[derive(Debug, Args)]
struct BlobArgs {
    /// Where the edge reaches the media processor.
    #[arg(long, value_name = "URI", default_value = mediaproc_blob::DEFAULT_MP_URI)]
    mp_uri: String,
    /// Audio socket direction: sendrecv, sendonly, recvonly, inactive, or none (no audio socket).
    #[arg(long, value_name = "DIR", default_value = "sendrecv")]
    audio: String,
    /// PCM format exchanged with the bot (Pcm16K, Pcm8K, Pcm24K, Pcm48K; other strings are kept as given).
    #[arg(long, value_name = "FMT", default_value = "Pcm16K")]
    audio_format: String,
    /// Ask for unmixed meeting audio (one stream per active speaker) besides the mix.
    #[arg(long)]
    unmixed: bool,
    /// Number of video sockets (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=10))]
    video: u8,
    /// Direction of the video sockets.
    #[arg(long, value_name = "DIR", default_value = "sendrecv")]
    video_direction: String,
    /// How the video sockets receive frames: nv12 (decoded) or h264 (encoded).
    #[arg(long, value_name = "FMT", default_value = "nv12")]
    video_format: String,
    /// Add a receive-only video-based screen-sharing socket.
    #[arg(long)]
    vbss: bool,
    /// Add a data socket.
    #[arg(long)]
    data: bool,
    /// Render context id of the audio socket (random unless given).
    #[arg(long, value_name = "UUID")]
    audio_render_context: Option<Uuid>,
    /// Source context id of the audio socket (random unless given).
    #[arg(long, value_name = "UUID")]
    audio_source_context: Option<Uuid>,
    /// mpMediaSessionId (random unless given).
    #[arg(long, value_name = "UUID")]
    session_id: Option<Uuid>,
    /// callId (random unless given).
    #[arg(long, value_name = "UUID")]
    call_id: Option<Uuid>,
    /// Token the edge must present to attach (written as the `edgeToken` member; left out unless given).
    #[arg(long, value_name = "TOKEN")]
    edge_token: Option<String>,
    /// Pretty-print.
    #[arg(long)]
    pretty: bool,
    /// Print the whole appHostedMediaConfig object instead of the bare blob.
    #[arg(long)]
    media_config: bool,
}

/// Flags of `mediaproc call-body`.
#[derive(Debug, Args)]
struct CallBodyArgs {
    /// What the call does: p2p, scheduled-meeting, channel-meeting, guest-join.
    #[arg(long, value_name = "SCENARIO")]
    scenario: mediaproc_blob::Scenario,
    /// Who hosts the media: app (a media processor such as mediaproc) or service (Graph).
    #[arg(long, value_name = "app|service", value_parser = ["app", "service"])]
    media: String,
    /// Where Graph posts notifications (https).
    #[arg(long, value_name = "URI")]
    callback: String,
    /// A user to call (p2p; repeat for a group call).
    #[arg(long, value_name = "ID[:NAME]")]
    target_user: Vec<String>,
    /// The meeting's chat thread id.
    #[arg(long, value_name = "ID")]
    thread_id: Option<String>,
    /// The meeting's message id (default "0", as for scheduled meetings).
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// The meeting's organizer (a user).
    #[arg(long, value_name = "ID[:NAME]")]
    organizer: Option<String>,
    /// The tenant of the organizer (meetings) or of the target users (p2p).
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    /// The guest identity to join as (guest-join).
    #[arg(long, value_name = "ID[:NAME]")]
    guest: Option<String>,
    /// Blob for app-hosted media: a file (or - for stdin) with a blob, an appHostedMediaConfig, or any text to use
    /// verbatim. Without it a new blob is generated.
    #[arg(long, value_name = "FILE")]
    blob: Option<PathBuf>,
    /// A prompt for service-hosted media to prefetch (repeatable).
    #[arg(long, value_name = "URI[=RESOURCE_ID]")]
    prefetch: Vec<String>,
    /// Print the required application permissions, one a line, instead of the body.
    #[arg(long)]
    permissions: bool,
    /// Print compact JSON instead of pretty-printed.
    #[arg(long)]
    compact: bool,
}

/// Flags of `mediaproc inspect`.
#[derive(Debug, Args)]
struct InspectArgs {
    /// The document (default or `-`: standard input).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print the document re-serialized through the model (lossless) instead of a summary.
    #[arg(long)]
    json: bool,
}

/// A failed command: what to print on stderr and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    lines: Vec<String>,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            lines: vec![message.into()],
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_INVALID,
            lines: vec![message.into()],
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Blob(args) => blob_cmd::run(&args),
        Command::CallBody(args) => call_body::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Callsim(args) => callsim::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Drain(args) => drain_cmd::drain(&args),
        Command::Undrain(args) => drain_cmd::undrain(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            for line in &failure.lines {
                output::error_line(line);
            }
            ExitCode::from(failure.code)
        }
    }
}
