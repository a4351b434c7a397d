//! Recognising a document: a call, notifications, a participant, a media config or a bare blob.

use serde_json::Value;

use crate::config::MediaSessionConfig;
use crate::error::BlobError;
use crate::graph::{
    Call, CommsNotification, CommsNotifications, MediaConfig, ODATA_APP_HOSTED_MEDIA_CONFIG,
    ODATA_CALL, ODATA_COMMS_NOTIFICATION, ODATA_COMMS_NOTIFICATIONS, ODATA_PARTICIPANT,
    ODATA_SERVICE_HOSTED_MEDIA_CONFIG, Participant,
};

/// Any document `mediaproc inspect` reads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Document {
    /// A call: a create-call request, a service response, or a call inside a notification.
    Call(Box<Call>),
    /// A `commsNotifications` envelope.
    Notifications(CommsNotifications),
    /// A single `commsNotification`.
    Notification(Box<CommsNotification>),
    /// A participant.
    Participant(Box<Participant>),
    /// A `serviceHostedMediaConfig` or `appHostedMediaConfig` object.
    MediaConfig(MediaConfig),
    /// A bare media session configuration; `quoted` when it came as a JSON string (escaped blob).
    Blob {
        /// The configuration.
        config: Box<MediaSessionConfig>,
        /// The input was a JSON string holding the blob, and is written back as one.
        quoted: bool,
    },
}

/// The kind of a [`Document`], for summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// See [`Document::Call`].
    Call,
    /// See [`Document::Notifications`].
    Notifications,
    /// See [`Document::Notification`].
    Notification,
    /// See [`Document::Participant`].
    Participant,
    /// See [`Document::MediaConfig`].
    MediaConfig,
    /// See [`Document::Blob`].
    Blob,
}

impl DocumentKind {
    /// A readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Call => "call",
            DocumentKind::Notifications => "commsNotifications",
            DocumentKind::Notification => "commsNotification",
            DocumentKind::Participant => "participant",
            DocumentKind::MediaConfig => "mediaConfig",
            DocumentKind::Blob => "media session configuration (blob)",
        }
    }
}

impl Document {
    /// The kind of document.
    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::Call(_) => DocumentKind::Call,
            Document::Notifications(_) => DocumentKind::Notifications,
            Document::Notification(_) => DocumentKind::Notification,
            Document::Participant(_) => DocumentKind::Participant,
            Document::MediaConfig(_) => DocumentKind::MediaConfig,
            Document::Blob { .. } => DocumentKind::Blob,
        }
    }

    /// The document serialized through the model (equal to the input as a JSON value).
    pub fn to_value(&self) -> Value {
        let result = match self {
            Document::Call(call) => serde_json::to_value(call),
            Document::Notifications(notifications) => serde_json::to_value(notifications),
            Document::Notification(notification) => serde_json::to_value(notification),
            Document::Participant(participant) => serde_json::to_value(participant),
            Document::MediaConfig(media) => serde_json::to_value(media),
            Document::Blob {
                config,
                quoted: true,
            } => Ok(Value::String(config.to_blob())),
            Document::Blob {
                config,
                quoted: false,
            } => serde_json::to_value(config),
        };
        // The model holds only strings, numbers, booleans, lists and string-keyed maps: serializing cannot fail.
        result.unwrap_or(Value::Null)
    }
}

/// Parses and recognises a document from raw bytes: UTF-8 and JSON are checked first (with offset or line and
/// column), then the kind is told from `@odata.type` or, without one, from the members present.
pub fn parse_document(bytes: &[u8]) -> Result<Document, BlobError> {
    let value = crate::parse_json_text(bytes)?;
    document_from_value(value)
}

fn document_from_value(value: Value) -> Result<Document, BlobError> {
    let object = match &value {
        Value::Object(object) => object,
        Value::String(text) => {
            // An escaped blob: a JSON string whose content is the configuration.
            let inner = crate::parse_json_text(text.as_bytes()).map_err(|err| {
                BlobError::NotAMediaSessionConfig {
                    path: ".".to_owned(),
                    message: format!("a JSON string that is not a blob: {err}"),
                }
            })?;
            let config = MediaSessionConfig::from_value_at(".", inner)?;
            return Ok(Document::Blob {
                config: Box::new(config),
                quoted: true,
            });
        }
        other => {
            return Err(BlobError::UnknownDocument {
                message: format!("expected a JSON object, found {}", crate::json_kind(other)),
            });
        }
    };
    let odata_type = object.get("@odata.type").and_then(Value::as_str);
    let document = match odata_type {
        Some(ODATA_CALL) => Document::Call(Box::new(crate::from_value_at(".", value)?)),
        Some(ODATA_COMMS_NOTIFICATIONS) => {
            Document::Notifications(crate::from_value_at(".", value)?)
        }
        Some(ODATA_COMMS_NOTIFICATION) => {
            Document::Notification(Box::new(crate::from_value_at(".", value)?))
        }
        Some(ODATA_PARTICIPANT) => {
            Document::Participant(Box::new(crate::from_value_at(".", value)?))
        }
        Some(ODATA_APP_HOSTED_MEDIA_CONFIG | ODATA_SERVICE_HOSTED_MEDIA_CONFIG) => {
            Document::MediaConfig(crate::from_value_at(".", value)?)
        }
        Some(other) => {
            return Err(BlobError::UnknownDocument {
                message: format!(
                    "`@odata.type` is `{other}`; expected a call, commsNotifications, commsNotification, participant, \
                     or a media config"
                ),
            });
        }
        None if object.contains_key("mpUri") => Document::Blob {
            config: Box::new(MediaSessionConfig::from_value_at(".", value)?),
            quoted: false,
        },
        None if object.contains_key("value") => {
            Document::Notifications(crate::from_value_at(".", value)?)
        }
        None if object.contains_key("resourceData") => {
            Document::Notification(Box::new(crate::from_value_at(".", value)?))
        }
        None if object.contains_key("mediaStreams") => {
            Document::Participant(Box::new(crate::from_value_at(".", value)?))
        }
        None if object.contains_key("blob") => {
            Document::MediaConfig(crate::from_value_at(".", value)?)
        }
        None if ["callbackUri", "requestedModalities", "mediaConfig", "state"]
            .iter()
            .any(|k| object.contains_key(*k)) =>
        {
            Document::Call(Box::new(crate::from_value_at(".", value)?))
        }
        None => {
            return Err(BlobError::UnknownDocument {
                message: "an object without `@odata.type` and without the members of a call, notification, \
                          participant, media config or blob"
                    .to_owned(),
            });
        }
    };
    Ok(document)
}
