//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong building or reading a blob or a Graph document.
///
/// Every variant says *where*: a JSON path (`targets[0].identity.user.id`), a line and column, a byte offset, or the
/// name of the builder field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The input is not valid UTF-8.
    #[error("input is not valid UTF-8 at byte offset {offset}")]
    InvalidUtf8 {
        /// Offset of the first byte that is not valid UTF-8.
        offset: usize,
    },
    /// The input is larger than [`crate::MAX_DOCUMENT_BYTES`].
    #[error("document is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is not JSON (or is truncated, or nests too deeply).
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The JSON is well formed but a member has the wrong type or shape.
    #[error("{path}: {message}")]
    Schema {
        /// JSON path of the offending member (`.` for the root).
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A blob string is not a media session configuration.
    #[error("{path}: not a media session configuration: {message}")]
    NotAMediaSessionConfig {
        /// JSON path of the blob (`.` for a bare blob).
        path: String,
        /// Why it was not accepted.
        message: String,
    },
    /// The document is JSON but not one of the kinds this crate knows.
    #[error("unrecognised document: {message}")]
    UnknownDocument {
        /// What was found instead.
        message: String,
    },
    /// A builder was given an impossible specification.
    #[error("invalid session spec: {field}: {message}")]
    InvalidSpec {
        /// The spec field at fault.
        field: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl BlobError {
    /// Converts a `serde_json` error from parsing text into [`BlobError::Json`] (syntax) or [`BlobError::Schema`].
    pub(crate) fn from_json(err: &serde_json::Error) -> Self {
        let message = strip_position(&err.to_string());
        BlobError::Json {
            line: err.line(),
            column: err.column(),
            message,
        }
    }

    /// Converts a `serde_path_to_error` failure, prefixing the path with `prefix` (the path of the converted value).
    pub(crate) fn from_path(
        prefix: &str,
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let inner = err.path().to_string();
        let path = join_path(prefix, &inner);
        BlobError::Schema {
            path,
            message: strip_position(&err.into_inner().to_string()),
        }
    }
}

/// Joins a path prefix (`value[0].resourceData`) and a `serde_path_to_error` path (`state` or `.` for the root).
pub(crate) fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix, inner) {
        ("" | ".", "" | ".") => ".".to_owned(),
        ("" | ".", inner) => inner.to_owned(),
        (prefix, "" | ".") => prefix.to_owned(),
        (prefix, inner) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (prefix, inner) => format!("{prefix}.{inner}"),
    }
}

/// serde_json appends " at line L column C" to its messages; we report the position in our own fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}
