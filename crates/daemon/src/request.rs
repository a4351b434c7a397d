//! `POST /v1/sessions` bodies: parsed strictly, with errors that name the JSON path.

use std::net::SocketAddr;
use std::path::PathBuf;

use mediaproc_blob::{AudioFormat, AudioSocketSpec, Direction, SessionSpec, VideoSocketSpec};
use mediaproc_pipeline::{EncoderOverrides, FecMode};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::DaemonError;

/// The body of `POST /v1/sessions`. Every member is optional: `{}` asks for a send-and-receive `Pcm16K` audio
/// session served to a WebSocket bot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// The audio socket.
    #[serde(default)]
    pub audio: Option<AudioRequest>,
    /// Number of video sockets (0..=10); video is carried opaquely for now.
    #[serde(default)]
    pub video: u8,
    /// A screen-sharing socket.
    #[serde(default)]
    pub vbss: bool,
    /// A data socket.
    #[serde(default)]
    pub data: bool,
    /// The call's correlation id (random when absent).
    #[serde(default)]
    pub call_id: Option<Uuid>,
    /// Who handles the audio: `"websocket"` (default), `"echo"`, `"record"`, `"tone"`, or
    /// `{"type":"play","file":"x.wav"}` / `{"type":"tone","frequencyHz":440}`.
    #[serde(default)]
    pub bot: Option<serde_json::Value>,
    /// A plain RTP/UDP edge instead of (or besides) QUIC.
    #[serde(default)]
    pub rtp: Option<RtpRequest>,
    /// The outbound encoder: bitrate, complexity, in-band FEC, DTX (defaults otherwise).
    #[serde(default)]
    pub encoder: Option<EncoderRequest>,
}

/// `PATCH /v1/sessions/{id}`: what may change while the session runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateSessionRequest {
    /// Encoder settings to change; absent members keep their value.
    #[serde(default)]
    pub encoder: Option<EncoderRequest>,
}

/// The outbound Opus encoder's settings a bot may choose; absent members keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncoderRequest {
    /// Target bitrate, 6000..=510000 bit/s (default 32000).
    #[serde(default)]
    pub bitrate_bps: Option<i32>,
    /// 0..=10 (default 5).
    #[serde(default)]
    pub complexity: Option<u8>,
    /// In-band FEC: `auto` (default: follows the loss the far end reports in RTCP, off on a clean path), `on`, `off`.
    #[serde(default)]
    pub fec: Option<String>,
    /// Time-shifted duplicates of each audio packet 40 ms later (RFC 7198): `auto` (default: on while the session's
    /// inbound loss is 3 % or more, off below 1 %), `on`, `off`.
    #[serde(default)]
    pub duplicate: Option<String>,
    /// Opus DTX (default off).
    #[serde(default)]
    pub dtx: Option<bool>,
}

impl EncoderRequest {
    /// Validates into the pipeline's overrides; errors name the member.
    pub fn into_overrides(self) -> Result<EncoderOverrides, String> {
        if let Some(b) = self.bitrate_bps {
            if !(6_000..=510_000).contains(&b) {
                return Err(format!("encoder.bitrateBps: {b} is outside 6000..=510000"));
            }
        }
        if let Some(c) = self.complexity {
            if c > 10 {
                return Err(format!("encoder.complexity: {c} is outside 0..=10"));
            }
        }
        Ok(EncoderOverrides {
            bitrate_bps: self.bitrate_bps,
            complexity: self.complexity,
            fec: auto_on_off("fec", self.fec.as_deref())?,
            duplicate: auto_on_off("duplicate", self.duplicate.as_deref())?,
            dtx: self.dtx,
        })
    }
}

/// `auto`, `on` or `off` of the encoder member `field`.
fn auto_on_off(field: &str, value: Option<&str>) -> Result<Option<FecMode>, String> {
    match value {
        None => Ok(None),
        Some("auto") => Ok(Some(FecMode::Auto)),
        Some("on") => Ok(Some(FecMode::On)),
        Some("off") => Ok(Some(FecMode::Off)),
        Some(other) => Err(format!(
            "encoder.{field}: `{other}` is not one of `auto`, `on`, `off`"
        )),
    }
}

impl UpdateSessionRequest {
    /// Parses a `PATCH` body.
    pub fn parse(body: &[u8]) -> Result<UpdateSessionRequest, DaemonError> {
        parse_json(body)
    }
}

/// The audio socket of a session request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AudioRequest {
    /// `sendrecv` (default), `sendonly`, `recvonly`, `inactive`.
    #[serde(default)]
    pub direction: Option<String>,
    /// `Pcm16K` (default), `Pcm8K`, `Pcm24K`, `Pcm48K`.
    #[serde(default)]
    pub format: Option<String>,
    /// Unmixed meeting audio: one stream per active speaker besides the mix.
    #[serde(default)]
    pub unmixed: bool,
}

/// A plain RTP/UDP edge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RtpRequest {
    /// Local address to bind (default `127.0.0.1:0`, a free port).
    #[serde(default)]
    pub local: Option<SocketAddr>,
    /// Where to send; absent = symmetric RTP (reply to where packets come from).
    #[serde(default)]
    pub remote: Option<SocketAddr>,
    /// With `remote`: the one address RTP is taken from when the peer sends from another socket (strict
    /// RTP); absent = the remote itself.
    #[serde(default)]
    pub source: Option<SocketAddr>,
    /// Without `remote` (symmetric RTP): consecutive in-sequence packets from a new address before the edge
    /// follows it (NAT rebinding); absent = the daemon's `rtp_rebind_packets`.
    #[serde(default)]
    pub rebind_packets: Option<u16>,
    /// `opus` (default), `pcmu`, `pcma`.
    #[serde(default)]
    pub codec: Option<String>,
    /// RTP payload type (default 96 for Opus, 0 PCMU, 8 PCMA).
    #[serde(default)]
    pub payload_type: Option<u8>,
}

/// Built-in and external bots.
#[derive(Debug, Clone, PartialEq)]
pub enum BotKind {
    /// An external bot connects to the session's WebSocket.
    WebSocket,
    /// Sends back what it hears.
    Echo,
    /// Writes the mixed audio and each participant's to WAV files, finalised when the session ends.
    Record,
    /// Plays a WAV file (resampled if needed), then silence.
    Play {
        /// The file.
        file: PathBuf,
    },
    /// A Rust bot in the same process (`RunningDaemon::open_session`); not available over HTTP.
    InProcess,
    /// Sends a continuous sine tone.
    Tone {
        /// Frequency in Hz.
        frequency_hz: f32,
    },
}

impl BotKind {
    /// The API spelling.
    pub fn name(&self) -> &'static str {
        match self {
            BotKind::WebSocket => "websocket",
            BotKind::Echo => "echo",
            BotKind::Record => "record",
            BotKind::Play { .. } => "play",
            BotKind::Tone { .. } => "tone",
            BotKind::InProcess => "inProcess",
        }
    }
}

/// Codecs of the RTP/UDP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpCodec {
    /// Opus, 48 kHz RTP clock.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

/// A validated RTP/UDP edge request.
#[derive(Debug, Clone, PartialEq)]
pub struct RtpPlan {
    /// Local address.
    pub local: SocketAddr,
    /// Fixed remote, or symmetric.
    pub remote: Option<SocketAddr>,
    /// With a fixed remote: the address RTP is taken from (`None` = the remote).
    pub source: Option<SocketAddr>,
    /// Symmetric RTP: packets from a new address before the edge follows it (`None` = the daemon's default).
    pub rebind_packets: Option<u16>,
    /// Codec.
    pub codec: RtpCodec,
    /// Payload type.
    pub payload_type: u8,
}

/// A validated request: what the engine needs to start the session.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// Sockets for the blob (ids and mpUri filled in by the API).
    pub spec: SessionSpec,
    /// The bot.
    pub bot: BotKind,
    /// The RTP/UDP edge, if asked for.
    pub rtp: Option<RtpPlan>,
    /// Encoder settings that differ from the defaults.
    pub encoder: EncoderOverrides,
}

impl CreateSessionRequest {
    /// Parses a body; an empty body is `{}`.
    pub fn parse(body: &[u8]) -> Result<CreateSessionRequest, DaemonError> {
        parse_json(body)
    }
}

/// Parses a JSON request body strictly (unknown members refused), errors with the JSON path; an empty body is `{}`.
fn parse_json<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DaemonError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!(
                "invalid JSON at line {}, column {}: {inner}",
                inner.line(),
                inner.column()
            )
        } else {
            format!("{path}: {inner}")
        };
        DaemonError::InvalidBody(message)
    })?;
    deserializer
        .end()
        .map_err(|err| DaemonError::InvalidBody(format!("trailing data: {err}")))?;
    Ok(request)
}

impl CreateSessionRequest {
    /// Validates the request into a plan.
    pub fn into_plan(self) -> Result<SessionPlan, DaemonError> {
        let bad = DaemonError::InvalidSession;
        let audio = match self.audio {
            None => Some(AudioSocketSpec::default()),
            Some(audio) => {
                let direction = match audio.direction.as_deref() {
                    None => Direction::SendRecv,
                    Some("none") => {
                        return Err(bad(
                            "audio.direction: mediaproc sessions carry audio; use `inactive`"
                                .into(),
                        ));
                    }
                    Some(text) => text.parse().map_err(|_| {
                        bad(format!(
                            "audio.direction: `{text}` is not one of {}",
                            Direction::NAMES.join(", ")
                        ))
                    })?,
                };
                let format = AudioFormat::from_text(audio.format.as_deref().unwrap_or("Pcm16K"));
                if format.sample_rate().is_none() {
                    return Err(bad(format!(
                        "audio.format: `{format}` is not supported; use one of {}",
                        AudioFormat::KNOWN.join(", ")
                    )));
                }
                Some(AudioSocketSpec {
                    direction,
                    format,
                    unmixed_meeting_audio: audio.unmixed,
                    ..AudioSocketSpec::default()
                })
            }
        };
        if usize::from(self.video) > mediaproc_blob::MAX_VIDEO_SOCKETS {
            return Err(bad(format!(
                "video: at most {} video sockets",
                mediaproc_blob::MAX_VIDEO_SOCKETS
            )));
        }
        let bot = parse_bot(self.bot.as_ref()).map_err(bad)?;
        let rtp = self.rtp.map(parse_rtp).transpose().map_err(bad)?;
        let encoder = self
            .encoder
            .map(EncoderRequest::into_overrides)
            .transpose()
            .map_err(bad)?
            .unwrap_or_default();
        Ok(SessionPlan {
            spec: SessionSpec {
                audio,
                video: vec![VideoSocketSpec::default(); usize::from(self.video)],
                vbss: self.vbss,
                data: self.data,
                call_id: self.call_id,
                ..SessionSpec::default()
            },
            bot,
            rtp,
            encoder,
        })
    }
}

fn parse_bot(value: Option<&serde_json::Value>) -> Result<BotKind, String> {
    use serde_json::Value;
    let (kind, object) =
        match value {
            None | Some(Value::Null) => return Ok(BotKind::WebSocket),
            Some(Value::String(kind)) => (kind.as_str(), None),
            Some(Value::Object(object)) => match object.get("type") {
                Some(Value::String(kind)) => (kind.as_str(), Some(object)),
                _ => return Err("bot.type: a bot object needs a string `type`".to_owned()),
            },
            Some(_) => return Err(
                "bot: expected a string (\"websocket\", \"echo\", ...) or an object with `type`"
                    .to_owned(),
            ),
        };
    let allowed: &[&str] = match kind {
        "websocket" | "echo" | "record" => &["type"],
        "play" => &["type", "file"],
        "tone" => &["type", "frequencyHz"],
        other => {
            return Err(format!(
                "bot: `{other}` is not one of websocket, echo, record, play, tone"
            ));
        }
    };
    if let Some(object) = object {
        if let Some(key) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(format!("bot.{key}: unknown member for a `{kind}` bot"));
        }
    }
    let member = |name: &str| object.and_then(|o| o.get(name));
    Ok(match kind {
        "websocket" => BotKind::WebSocket,
        "echo" => BotKind::Echo,
        "record" => BotKind::Record,
        "play" => match member("file") {
            Some(Value::String(file)) if !file.is_empty() => BotKind::Play {
                file: PathBuf::from(file),
            },
            _ => return Err("bot.file: a `play` bot needs the WAV file to play".to_owned()),
        },
        _ => {
            let frequency_hz = match member("frequencyHz") {
                None => 440.0,
                Some(value) => value
                    .as_f64()
                    .filter(|f| (20.0..=8000.0).contains(f))
                    .ok_or("bot.frequencyHz: a number from 20 to 8000")?
                    as f32,
            };
            BotKind::Tone { frequency_hz }
        }
    })
}

fn parse_rtp(request: RtpRequest) -> Result<RtpPlan, String> {
    let codec = match request
        .codec
        .as_deref()
        .unwrap_or("opus")
        .to_ascii_lowercase()
        .as_str()
    {
        "opus" => RtpCodec::Opus,
        "pcmu" => RtpCodec::Pcmu,
        "pcma" => RtpCodec::Pcma,
        other => {
            return Err(format!(
                "rtp.codec: `{other}` is not one of opus, pcmu, pcma"
            ));
        }
    };
    let payload_type = request.payload_type.unwrap_or(match codec {
        RtpCodec::Opus => 96,
        RtpCodec::Pcmu => 0,
        RtpCodec::Pcma => 8,
    });
    if payload_type > 127 {
        return Err(format!(
            "rtp.payloadType: {payload_type} is not a payload type (0..=127)"
        ));
    }
    if request.source.is_some() && request.remote.is_none() {
        return Err(
            "rtp.source: only with rtp.remote (symmetric RTP takes its source from the first packets)"
                .to_owned(),
        );
    }
    match request.rebind_packets {
        Some(_) if request.remote.is_some() => {
            return Err(
                "rtp.rebindPackets: only without rtp.remote (a fixed remote never moves)"
                    .to_owned(),
            );
        }
        Some(0) => return Err("rtp.rebindPackets: at least 1".to_owned()),
        _ => {}
    }
    Ok(RtpPlan {
        local: request
            .local
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        remote: request.remote,
        source: request.source,
        rebind_packets: request.rebind_packets,
        codec,
        payload_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(body: &str) -> Result<Option<RtpPlan>, DaemonError> {
        CreateSessionRequest::parse(body.as_bytes())?
            .into_plan()
            .map(|plan| plan.rtp)
    }

    #[test]
    fn strict_rtp_members_parse_and_contradictions_are_refused() {
        let fixed = rtp(r#"{"rtp":{"remote":"127.0.0.1:5004","source":"127.0.0.1:5006"}}"#);
        let fixed = fixed.ok().flatten();
        assert_eq!(
            fixed.as_ref().and_then(|p| p.source),
            Some(SocketAddr::from(([127, 0, 0, 1], 5006)))
        );
        let symmetric = rtp(r#"{"rtp":{"rebindPackets":10}}"#).ok().flatten();
        assert_eq!(symmetric.and_then(|p| p.rebind_packets), Some(10));
        for bad in [
            r#"{"rtp":{"source":"127.0.0.1:5006"}}"#,
            r#"{"rtp":{"remote":"127.0.0.1:5004","rebindPackets":4}}"#,
            r#"{"rtp":{"rebindPackets":0}}"#,
            r#"{"rtp":{"rebindPackets":70000}}"#,
        ] {
            assert!(rtp(bad).is_err(), "{bad}");
        }
    }
}
