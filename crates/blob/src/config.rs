//! The media session configuration ("the blob") and the builder that makes one from a [`SessionSpec`].

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::BlobError;
use crate::graph::MediaConfig;
use crate::macros::{model_object, string_enum};
use crate::maybe::Maybe;

/// `skypeMediaBotsVersion` of the seed's sample blob, used unless a spec says otherwise.
pub const DEFAULT_SKYPE_MEDIA_BOTS_VERSION: &str = "1.11.1.0086";
/// `mediaStackVersion` of the seed's sample blob.
pub const DEFAULT_MEDIA_STACK_VERSION: &str = "2018.53.1.1";
/// `mpVersion` of the seed's sample blob.
pub const DEFAULT_MP_VERSION: &str = "7.2.0.3881";
/// Where `mediaproc serve` listens by default (`--media 0.0.0.0:4433`), as an mpUri.
pub const DEFAULT_MP_URI: &str = "quic://localhost:4433/MediaProcessor";
/// The platform allows at most this many video sockets per call.
pub const MAX_VIDEO_SOCKETS: usize = 10;

string_enum! {
    /// `supportedAudioFormat`: the PCM format exchanged with the bot.
    #[derive(Default)]
    AudioFormat {
        /// 16 kHz mono 16-bit PCM: 320 samples (640 bytes) per 20 ms frame. The platform's default.
        #[default]
        Pcm16K = "Pcm16K",
        /// 8 kHz mono 16-bit PCM: 160 samples per frame.
        Pcm8K = "Pcm8K",
        /// 24 kHz mono 16-bit PCM (a mediaproc extension; Opus decodes to it natively).
        Pcm24K = "Pcm24K",
        /// 48 kHz mono 16-bit PCM (a mediaproc extension; Opus decodes to it natively).
        Pcm48K = "Pcm48K",
    }
}

impl AudioFormat {
    /// Sample rate in Hz, for the known formats.
    pub fn sample_rate(&self) -> Option<u32> {
        match self {
            AudioFormat::Pcm16K => Some(16_000),
            AudioFormat::Pcm8K => Some(8_000),
            AudioFormat::Pcm24K => Some(24_000),
            AudioFormat::Pcm48K => Some(48_000),
            AudioFormat::Other(_) => None,
        }
    }

    /// Bytes in one 20 ms mono 16-bit frame, for the known formats (640 at `Pcm16K`).
    pub fn frame_bytes(&self) -> Option<usize> {
        self.sample_rate().map(|rate| rate as usize / 50 * 2)
    }
}

model_object! {
    /// The media session configuration that travels as `appHostedMediaConfig.blob`.
    ///
    /// Member order and the `null`/`[]` shape follow the seed's sample exactly, so [`MediaSessionConfig::to_blob`] of
    /// a configuration built with the seed's ids reproduces the seed's blob byte for byte. Members this version does
    /// not know are kept in `extra` and written back after the known ones.
    MediaSessionConfig {
        /// Where the edge reaches the media processor (`net.tcp://…` on the closed platform, `quic://…` here).
        mp_uri: String = "mpUri",
        /// Render (bot receives) contexts of the audio socket.
        audio_render_contexts: Vec<String> = "audioRenderContexts",
        /// Render contexts of the video and VBSS sockets.
        video_render_contexts: Vec<String> = "videoRenderContexts",
        /// Source (bot sends) contexts of the audio socket.
        audio_source_contexts: Vec<String> = "audioSourceContexts",
        /// Source contexts of the video sockets.
        video_source_contexts: Vec<String> = "videoSourceContexts",
        /// Render contexts of the data socket (`null` without one).
        data_render_contexts: Vec<String> = "dataRenderContexts",
        /// Source contexts of the data socket (`null` without one).
        data_source_contexts: Vec<String> = "dataSourceContexts",
        /// PCM format exchanged with the bot.
        supported_audio_format: AudioFormat = "supportedAudioFormat",
        /// Encodings the video sinks accept (e.g. `"H264"` for a socket that receives encoded video).
        video_sink_encoding_formats: Vec<Value> = "videoSinkEncodingFormats",
        /// The media session id (a UUID).
        mp_media_session_id: String = "mpMediaSessionId",
        /// Preferred media region, if any.
        region_affinity: Value = "regionAffinity",
        /// Version string of the bot media SDK.
        skype_media_bots_version: String = "skypeMediaBotsVersion",
        /// Version string of the media stack.
        media_stack_version: String = "mediaStackVersion",
        /// Version string of the media processor.
        mp_version: String = "mpVersion",
        /// Correlation id of the call (a UUID).
        call_id: String = "callId",
        /// mediaproc extension: the audio socket asks for unmixed meeting audio (one stream per active speaker).
        /// Written only when set, so a blob made without it keeps the seed's layout.
        receive_unmixed_meeting_audio: bool = "receiveUnmixedMeetingAudio",
        /// mediaproc extension: the token an edge presents to attach to this session at `mpUri`.
        /// Written only when set, so a blob made without a token keeps the seed's layout.
        edge_token: String = "edgeToken",
    }
}

impl MediaSessionConfig {
    /// The compact JSON text that goes into `appHostedMediaConfig.blob`.
    pub fn to_blob(&self) -> String {
        // Serializing plain strings, vectors and maps to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Pretty-printed JSON, for people.
    pub fn to_blob_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses blob text (the unescaped JSON object).
    pub fn from_blob(text: &str) -> Result<Self, BlobError> {
        let value: Value = crate::parse_json_text(text.as_bytes())?;
        Self::from_value_at(".", value)
    }

    /// Converts an already-parsed JSON value at `path` (used for blobs found inside larger documents).
    pub fn from_value_at(path: &str, value: Value) -> Result<Self, BlobError> {
        let Value::Object(map) = &value else {
            return Err(BlobError::NotAMediaSessionConfig {
                path: path.to_owned(),
                message: format!("expected a JSON object, found {}", crate::json_kind(&value)),
            });
        };
        if !map.contains_key("mpUri") {
            return Err(BlobError::NotAMediaSessionConfig {
                path: path.to_owned(),
                message: "it has no `mpUri` member".to_owned(),
            });
        }
        crate::from_value_at(path, value)
    }

    /// The `appHostedMediaConfig` that carries this blob in a create-call request.
    pub fn to_media_config(&self) -> MediaConfig {
        MediaConfig::app_hosted(self.to_blob())
    }

    /// All context ids with the JSON path of each, for validation.
    pub fn context_ids(&self) -> Vec<(String, &str)> {
        let lists = [
            ("audioRenderContexts", &self.audio_render_contexts),
            ("videoRenderContexts", &self.video_render_contexts),
            ("audioSourceContexts", &self.audio_source_contexts),
            ("videoSourceContexts", &self.video_source_contexts),
            ("dataRenderContexts", &self.data_render_contexts),
            ("dataSourceContexts", &self.data_source_contexts),
        ];
        lists
            .into_iter()
            .flat_map(|(name, list)| {
                list.as_ref()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(move |(i, id)| (format!("{name}[{i}]"), id.as_str()))
            })
            .collect()
    }
}

/// Which way media flows on a socket, from the bot's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// The bot receives and sends.
    #[default]
    SendRecv,
    /// The bot only sends.
    SendOnly,
    /// The bot only receives.
    RecvOnly,
    /// Neither (the socket exists but carries nothing).
    Inactive,
}

impl Direction {
    /// CLI spellings, in the order of the variants.
    pub const NAMES: [&'static str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

    /// True when the bot receives media on the socket (it gets a render context).
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// True when the bot sends media on the socket (it gets a source context).
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = BlobError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "sendrecv" | "sendreceive" => Ok(Direction::SendRecv),
            "sendonly" => Ok(Direction::SendOnly),
            "recvonly" | "receiveonly" => Ok(Direction::RecvOnly),
            "inactive" => Ok(Direction::Inactive),
            _ => Err(BlobError::InvalidSpec {
                field: "direction",
                message: format!("`{text}` is not one of sendrecv, sendonly, recvonly, inactive"),
            }),
        }
    }
}

/// How a receiving video socket wants frames delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoColorFormat {
    /// Decoded raw NV12 frames.
    #[default]
    Nv12,
    /// Encoded H.264, passed through undecoded (listed in `videoSinkEncodingFormats`).
    H264,
}

/// The audio socket of a session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioSocketSpec {
    /// Media direction.
    pub direction: Direction,
    /// PCM format exchanged with the bot.
    pub format: AudioFormat,
    /// Receive one stream per active speaker in meetings, besides the mix.
    pub unmixed_meeting_audio: bool,
    /// Render context id; random when `None`. Only valid when the socket receives.
    pub render_context: Option<Uuid>,
    /// Source context id; random when `None`. Only valid when the socket sends.
    pub source_context: Option<Uuid>,
}

/// One video socket of a session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VideoSocketSpec {
    /// Media direction.
    pub direction: Direction,
    /// Format of received frames.
    pub receive_color_format: VideoColorFormat,
    /// Formats the bot will send (e.g. `"NV12_1280x720_30Fps"`); kept for the daemon, not part of the blob layout.
    pub send_formats: Vec<String>,
    /// Render context id; random when `None`.
    pub render_context: Option<Uuid>,
    /// Source context id; random when `None`.
    pub source_context: Option<Uuid>,
}

/// What a media session should carry; [`SessionSpec::build`] turns it into a [`MediaSessionConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// Where the edge reaches the media processor.
    pub mp_uri: String,
    /// The audio socket, if any.
    pub audio: Option<AudioSocketSpec>,
    /// Up to [`MAX_VIDEO_SOCKETS`] video sockets.
    pub video: Vec<VideoSocketSpec>,
    /// A receive-only video-based screen-sharing socket.
    pub vbss: bool,
    /// A data socket (send and receive).
    pub data: bool,
    /// `mpMediaSessionId`; random when `None`.
    pub session_id: Option<Uuid>,
    /// `callId`; random when `None`.
    pub call_id: Option<Uuid>,
    /// `regionAffinity`, `null` when `None`.
    pub region_affinity: Option<String>,
    /// `skypeMediaBotsVersion`.
    pub skype_media_bots_version: String,
    /// `mediaStackVersion`.
    pub media_stack_version: String,
    /// `mpVersion`.
    pub mp_version: String,
    /// The edge token written as the `edgeToken` extension member; left out when `None`.
    pub edge_token: Option<String>,
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            mp_uri: DEFAULT_MP_URI.to_owned(),
            audio: Some(AudioSocketSpec::default()),
            video: Vec::new(),
            vbss: false,
            data: false,
            session_id: None,
            call_id: None,
            region_affinity: None,
            skype_media_bots_version: DEFAULT_SKYPE_MEDIA_BOTS_VERSION.to_owned(),
            media_stack_version: DEFAULT_MEDIA_STACK_VERSION.to_owned(),
            mp_version: DEFAULT_MP_VERSION.to_owned(),
            edge_token: None,
        }
    }
}

impl SessionSpec {
    /// Builds the configuration, drawing random v4 UUIDs for the ids the spec leaves open.
    pub fn build(&self) -> Result<MediaSessionConfig, BlobError> {
        self.build_with(&mut Uuid::new_v4)
    }

    /// Builds the configuration, taking the ids the spec leaves open from `next_id` (deterministic in tests).
    pub fn build_with(
        &self,
        next_id: &mut dyn FnMut() -> Uuid,
    ) -> Result<MediaSessionConfig, BlobError> {
        if self.mp_uri.trim().is_empty() {
            return Err(BlobError::InvalidSpec {
                field: "mp_uri",
                message: "must not be empty".to_owned(),
            });
        }
        if self.video.len() > MAX_VIDEO_SOCKETS {
            return Err(BlobError::InvalidSpec {
                field: "video",
                message: format!(
                    "{} video sockets requested, at most {MAX_VIDEO_SOCKETS} allowed",
                    self.video.len()
                ),
            });
        }
        let mut pick = |given: Option<Uuid>,
                        wanted: bool,
                        field: &'static str|
         -> Result<Option<String>, BlobError> {
            match (given, wanted) {
                (Some(id), true) => Ok(Some(id.to_string())),
                (None, true) => Ok(Some(next_id().to_string())),
                (None, false) => Ok(None),
                (Some(_), false) => Err(BlobError::InvalidSpec {
                    field,
                    message: "given, but the socket's direction does not use it".to_owned(),
                }),
            }
        };

        let mut audio_render = Vec::new();
        let mut audio_source = Vec::new();
        let mut unmixed = Maybe::Absent;
        let mut format = AudioFormat::Pcm16K;
        if let Some(audio) = &self.audio {
            audio_render.extend(pick(
                audio.render_context,
                audio.direction.receives(),
                "audio.render_context",
            )?);
            audio_source.extend(pick(
                audio.source_context,
                audio.direction.sends(),
                "audio.source_context",
            )?);
            if audio.unmixed_meeting_audio {
                if !audio.direction.receives() {
                    return Err(BlobError::InvalidSpec {
                        field: "audio.unmixed_meeting_audio",
                        message: format!(
                            "needs a receiving audio socket, the direction is {}",
                            audio.direction.as_str()
                        ),
                    });
                }
                unmixed = Maybe::Value(true);
            }
            format = audio.format.clone();
        }

        let mut video_render = Vec::new();
        let mut video_source = Vec::new();
        let mut sink_formats = Vec::new();
        for socket in &self.video {
            let receives = socket.direction.receives();
            video_render.extend(pick(
                socket.render_context,
                receives,
                "video.render_context",
            )?);
            video_source.extend(pick(
                socket.source_context,
                socket.direction.sends(),
                "video.source_context",
            )?);
            let h264 = Value::String("H264".to_owned());
            if receives
                && socket.receive_color_format == VideoColorFormat::H264
                && !sink_formats.contains(&h264)
            {
                sink_formats.push(h264);
            }
        }
        if self.vbss {
            video_render.push(next_id().to_string());
        }

        let (data_render, data_source) = if self.data {
            (
                Maybe::Value(vec![next_id().to_string()]),
                Maybe::Value(vec![next_id().to_string()]),
            )
        } else {
            (Maybe::Null, Maybe::Null)
        };

        let session_id = self.session_id.unwrap_or_else(&mut *next_id);
        let call_id = self.call_id.unwrap_or_else(&mut *next_id);
        Ok(MediaSessionConfig {
            mp_uri: Maybe::Value(self.mp_uri.clone()),
            audio_render_contexts: Maybe::Value(audio_render),
            video_render_contexts: Maybe::Value(video_render),
            audio_source_contexts: Maybe::Value(audio_source),
            video_source_contexts: Maybe::Value(video_source),
            data_render_contexts: data_render,
            data_source_contexts: data_source,
            supported_audio_format: Maybe::Value(format),
            video_sink_encoding_formats: Maybe::Value(sink_formats),
            mp_media_session_id: Maybe::Value(session_id.to_string()),
            region_affinity: self.region_affinity.clone().map(Value::String).into(),
            skype_media_bots_version: Maybe::Value(self.skype_media_bots_version.clone()),
            media_stack_version: Maybe::Value(self.media_stack_version.clone()),
            mp_version: Maybe::Value(self.mp_version.clone()),
            call_id: Maybe::Value(call_id.to_string()),
            receive_unmixed_meeting_audio: unmixed,
            edge_token: self.edge_token.clone().map_or(Maybe::Absent, Maybe::Value),
            extra: Map::new(),
        })
    }
}
