//! # mediaproc-blob — the blob generator and the Graph call model
//!
//! A calling bot that hosts its own media creates a call with `POST /app/calls` and puts, in `mediaConfig`, an
//! `appHostedMediaConfig` whose `blob` is a serialized *media session configuration*: where the media processor
//! listens (`mpUri`), the socket contexts of the session's audio, video and data sockets, the PCM format, and the
//! session and call ids. This crate builds that blob and every create-call body, and reads back everything Graph
//! sends — without I/O, so any Rust bot can use it on its own.
//!
//! ## Design
//! - **Exact output.** [`MediaSessionConfig`] serializes in the member order and `null`/`[]` shape of the only
//!   published sample; built with the sample's ids it reproduces the sample byte for byte.
//! - **Lossless input.** Every object is a `model_object`: its known members are [`Maybe`] (absent, `null` or a
//!   value, three different documents) and unknown members are kept in `extra`, in order. Parsing then serializing
//!   any document gives an equal JSON value, whatever Graph adds tomorrow. Open enums ([`CallState`],
//!   [`Modality`], [`AudioFormat`], …) keep unknown strings as `Other`.
//! - **Errors say where.** Invalid JSON reports line and column, invalid UTF-8 a byte offset, a wrong type the JSON
//!   path (`value[0].resourceData[1].mediaStreams[0].serverMuted`); [`validate`] returns every problem at once,
//!   each with its path and a sentence, errors and warnings apart.
//! - **Scenarios from the seed.** [`CallRequestSpec`] builds the request bodies of Graph's create-call examples
//!   (peer-to-peer and meeting joins, service- or app-hosted media, guest joins) and [`required_permissions`] lists
//!   the application permissions each needs.
//!
//! ```
//! use mediaproc_blob::{SessionSpec, MediaSessionConfig};
//! let config = SessionSpec::default().build().unwrap();
//! let blob = config.to_blob();
//! assert!(blob.starts_with(r#"{"mpUri":"quic://localhost:4433/MediaProcessor","audioRenderContexts":["#));
//! assert_eq!(MediaSessionConfig::from_blob(&blob).unwrap(), config);
//! ```

mod config;
mod document;
mod error;
mod graph;
mod macros;
mod maybe;
mod scenario;
mod validate;

pub use config::{
    AudioFormat, AudioSocketSpec, DEFAULT_MEDIA_STACK_VERSION, DEFAULT_MP_URI, DEFAULT_MP_VERSION,
    DEFAULT_SKYPE_MEDIA_BOTS_VERSION, Direction, MAX_VIDEO_SOCKETS, MediaSessionConfig,
    SessionSpec, VideoColorFormat, VideoSocketSpec,
};
pub use document::{Document, DocumentKind, parse_document};
pub use error::BlobError;
pub use graph::*;
pub use maybe::Maybe;
pub use scenario::{
    CallRequestSpec, MediaChoice, MeetingSpec, Party, Permission, Scenario, required_permissions,
};
pub use validate::{Problem, Severity, validate, validate_call_request};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Documents larger than this are refused before parsing (a Graph call object is a few kilobytes).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Parses JSON text after checking its size and UTF-8, with errors that name the byte offset or line and column.
///
/// Nesting deeper than serde_json's limit (128) is refused as invalid JSON at the place it happens.
pub fn parse_json_text(bytes: &[u8]) -> Result<Value, BlobError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(BlobError::TooLarge {
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|err| BlobError::InvalidUtf8 {
        offset: err.valid_up_to(),
    })?;
    serde_json::from_str(text).map_err(|err| BlobError::from_json(&err))
}

/// Converts a JSON value into a model type; on failure the error carries `path` joined with the inner path.
pub fn from_value_at<T: DeserializeOwned>(path: &str, value: Value) -> Result<T, BlobError> {
    serde_path_to_error::deserialize(value).map_err(|err| BlobError::from_path(path, err))
}

/// A short name for the JSON type of `value`, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
