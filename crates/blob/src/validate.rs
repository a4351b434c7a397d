//! Validation: every problem of a document at once, each with its JSON path and a sentence.

use uuid::Uuid;

use crate::config::MediaSessionConfig;
use crate::document::Document;
use crate::error::{BlobError, join_path};
use crate::graph::{
    Call, CommsNotification, IdentitySet, MediaConfig, MediaConfigKind, MeetingInfoKind,
    Participant, Resource,
};
use crate::scenario::Scenario;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The service would accept the document, but something in it is pointless or unusual.
    Warning,
    /// The document is invalid.
    Error,
}

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// JSON path of the member at fault (`.` is the root; `mediaConfig.blob → audioRenderContexts[0]` is inside a
    /// blob).
    pub path: String,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: {}: {}", self.path, self.message)
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        self.0.push(Problem {
            severity,
            path,
            message,
        });
    }
}

/// Validates any document. A call without `id` and `state` is checked as a create-call request; one with them as a
/// service object.
pub fn validate(document: &Document) -> Vec<Problem> {
    let mut problems = Problems::default();
    match document {
        Document::Call(call) if is_request(call) => check_request(call, None, &mut problems),
        Document::Call(call) => check_service_call(call, ".", &mut problems),
        Document::Notifications(notifications) => match notifications.value.as_ref() {
            Some(list) => {
                for (i, notification) in list.iter().enumerate() {
                    check_notification(notification, &format!("value[{i}]"), &mut problems);
                }
            }
            None => problems.error(
                "value",
                "a commsNotifications envelope needs a `value` list",
            ),
        },
        Document::Notification(notification) => {
            check_notification(notification, ".", &mut problems)
        }
        Document::Participant(participant) => check_participant(participant, ".", &mut problems),
        Document::MediaConfig(media) => check_media_config(media, ".", &mut problems),
        Document::Blob { config, .. } => check_blob(config, ".", &mut problems),
    }
    problems.0
}

/// Validates a create-call request body; with `expected`, also that it is a correct body for that scenario.
pub fn validate_call_request(call: &Call, expected: Option<Scenario>) -> Vec<Problem> {
    let mut problems = Problems::default();
    check_request(call, expected, &mut problems);
    problems.0
}

/// A call object is a request when the service has not filled in its id and state.
fn is_request(call: &Call) -> bool {
    call.id.is_absent() && call.state.is_absent()
}

fn check_request(call: &Call, expected: Option<Scenario>, problems: &mut Problems) {
    if let Some(odata_type) = call.odata_type.as_ref() {
        if odata_type != crate::graph::ODATA_CALL {
            problems.error(
                "@odata.type",
                format!("a create-call body is a `#microsoft.graph.call`, not `{odata_type}`"),
            );
        }
    }
    match call.callback_uri.as_ref() {
        None => problems.error(
            "callbackUri",
            "a create-call request needs `callbackUri`, where Graph posts notifications",
        ),
        Some(uri) => check_callback(uri, "callbackUri", problems),
    }
    match call.requested_modalities.as_ref() {
        None => problems.error(
            "requestedModalities",
            "a create-call request needs `requestedModalities`, e.g. [\"audio\"]",
        ),
        Some(list) if list.is_empty() => {
            problems.error("requestedModalities", "must name at least one modality")
        }
        Some(list) => {
            for (i, modality) in list.iter().enumerate() {
                if !modality.is_known() {
                    problems.error(
                        format!("requestedModalities[{i}]"),
                        format!(
                            "unknown modality `{modality}`; expected one of {}",
                            crate::graph::Modality::KNOWN.join(", ")
                        ),
                    );
                }
            }
        }
    }
    match call.media_config.as_ref() {
        None => problems.error(
            "mediaConfig",
            "a create-call request needs `mediaConfig` (service- or app-hosted media)",
        ),
        Some(media) => check_media_config(media, "mediaConfig", problems),
    }

    let joins_meeting = call.chat_info.as_ref().is_some() || call.meeting_info.as_ref().is_some();
    let guest = call
        .source
        .as_ref()
        .and_then(|source| source.identity.as_ref())
        .and_then(|set| set.guest.as_ref());
    match expected {
        Some(Scenario::PeerToPeer) if joins_meeting => problems.error(
            "chatInfo",
            "a peer-to-peer call has no `chatInfo`/`meetingInfo`; they are for meeting joins",
        ),
        Some(scenario) if scenario.joins_meeting() || joins_meeting => {
            check_meeting(call, problems)
        }
        None if joins_meeting => check_meeting(call, problems),
        _ => {}
    }
    let wants_targets =
        matches!(expected, Some(Scenario::PeerToPeer)) || (expected.is_none() && !joins_meeting);
    match call.targets.as_ref() {
        Some(targets) if !targets.is_empty() => {
            for (i, target) in targets.iter().enumerate() {
                check_identity_set(target.identity.as_ref(), &format!("targets[{i}].identity"), problems);
            }
        }
        _ if wants_targets => problems.error(
            "targets",
            if expected.is_some() {
                "a peer-to-peer call needs `targets`: the users to call"
            } else {
                "a call needs `targets` (peer-to-peer) or `chatInfo` and `meetingInfo` (meeting join)"
            },
        ),
        _ => {}
    }
    if expected == Some(Scenario::GuestJoin) && guest.is_none() {
        problems.error(
            "source.identity.guest",
            "a guest join needs a `guest` identity in `source`",
        );
    }
    if guest.is_some() && !joins_meeting {
        problems.error(
            "source.identity.guest",
            "a guest identity can only join a meeting (`chatInfo`, `meetingInfo`)",
        );
    }
    if let Some(guest) = guest {
        if guest
            .display_name
            .as_ref()
            .is_none_or(|name| name.trim().is_empty())
        {
            problems.error(
                "source.identity.guest.displayName",
                "a guest needs the display name shown in the meeting",
            );
        }
    }
    if let Some(timeout) = call.ringing_timeout_in_seconds.as_ref() {
        if !crate::graph::int_like(timeout).is_some_and(|seconds| (30..=115).contains(&seconds)) {
            problems.error(
                "ringingTimeoutInSeconds",
                format!("must be 30 to 115 seconds, found {timeout}"),
            );
        }
    }
    // Serialized once: keeps the list of server-generated members in one place (`Call::SERVER_GENERATED`).
    let serialized = serde_json::to_value(call).unwrap_or_default();
    for member in Call::SERVER_GENERATED
        .iter()
        .copied()
        .filter(|member| serialized.get(member).is_some())
    {
        problems.warning(
            member,
            "server generated: ignored by the service on POST /app/calls",
        );
    }
}

fn check_meeting(call: &Call, problems: &mut Problems) {
    match call.chat_info.as_ref() {
        None => problems.error(
            "chatInfo",
            "a meeting join needs `chatInfo` (the meeting's threadId and messageId)",
        ),
        Some(chat) => {
            if chat.thread_id.as_ref().is_none_or(|id| id.is_empty()) {
                problems.error(
                    "chatInfo.threadId",
                    "a meeting join needs the meeting's thread id (`19:…@thread…`)",
                );
            }
            if chat.message_id.is_absent() {
                problems.error(
                    "chatInfo.messageId",
                    "a meeting join needs the message id (\"0\" for a scheduled meeting)",
                );
            }
        }
    }
    match call.meeting_info.as_ref() {
        None => problems.error(
            "meetingInfo",
            "a meeting join needs `meetingInfo` (e.g. an organizerMeetingInfo)",
        ),
        Some(meeting) => match meeting.kind() {
            MeetingInfoKind::Organizer => check_identity_set(
                meeting.organizer.as_ref(),
                "meetingInfo.organizer",
                problems,
            ),
            MeetingInfoKind::Token => {
                if meeting.token.is_absent() {
                    problems.error("meetingInfo.token", "a tokenMeetingInfo needs `token`");
                }
            }
            MeetingInfoKind::JoinMeetingId => {
                if meeting.join_meeting_id.is_absent() {
                    problems.error(
                        "meetingInfo.joinMeetingId",
                        "a joinMeetingIdMeetingInfo needs `joinMeetingId`",
                    );
                }
            }
            MeetingInfoKind::Other => problems.error(
                "meetingInfo.@odata.type",
                "expected organizerMeetingInfo, tokenMeetingInfo or joinMeetingIdMeetingInfo",
            ),
        },
    }
}

fn check_identity_set(set: Option<&IdentitySet>, path: &str, problems: &mut Problems) {
    match set.and_then(IdentitySet::primary) {
        None => problems.error(
            path,
            "needs an identity (user, application, guest, phone, …)",
        ),
        Some((kind, identity)) if identity.id.as_ref().is_none_or(|id| id.is_empty()) => {
            problems.error(format!("{path}.{kind}.id"), "the identity needs an `id`")
        }
        Some(_) => {}
    }
}

fn check_callback(uri: &str, path: &str, problems: &mut Problems) {
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("https://") && uri.len() > "https://".len() {
        return;
    }
    let loopback = ["http://localhost", "http://127.", "http://[::1]"]
        .iter()
        .any(|prefix| lower.starts_with(prefix));
    if loopback {
        problems.warning(
            path,
            format!(
                "`{uri}` is plain http: only a local emulator accepts it; Graph requires https"
            ),
        );
    } else {
        problems.error(path, format!("must be an https URL, found `{uri}`"));
    }
}

fn check_media_config(media: &MediaConfig, path: &str, problems: &mut Problems) {
    match media.kind() {
        MediaConfigKind::ServiceHosted => {
            if media.blob.is_present() {
                problems.warning(join_path(path, "blob"), "a serviceHostedMediaConfig has no blob; it is ignored");
            }
        }
        MediaConfigKind::AppHosted => match media.media_session_config(path) {
            Ok(config) => check_blob(&config, &join_path(path, "blob"), problems),
            Err(_) if media.blob.as_ref().is_some_and(|blob| is_placeholder(blob)) => problems.warning(
                join_path(path, "blob"),
                "the blob is a documentation placeholder; put a media session configuration here (`mediaproc blob`)",
            ),
            Err(BlobError::NotAMediaSessionConfig { path, message }) => {
                problems.error(path, format!("not a media session configuration: {message}"))
            }
            Err(BlobError::Schema { path, message }) => problems.error(path, message),
            Err(err) => problems.error(join_path(path, "blob"), err.to_string()),
        },
        MediaConfigKind::Other => problems.error(
            join_path(path, "@odata.type"),
            match media.odata_type.as_ref() {
                Some(other) => format!(
                    "unknown media config `{other}`; expected #microsoft.graph.serviceHostedMediaConfig or \
                     #microsoft.graph.appHostedMediaConfig"
                ),
                None => "a media config needs `@odata.type` (serviceHostedMediaConfig or appHostedMediaConfig)".to_owned(),
            },
        ),
    }
}

/// The Graph documentation writes `"blob": "<Media Session Configuration>"` where a real blob goes.
fn is_placeholder(blob: &str) -> bool {
    let blob = blob.trim();
    blob.len() > 2
        && blob.starts_with('<')
        && blob.ends_with('>')
        && !blob[1..blob.len() - 1].contains(['<', '>'])
}

fn blob_member(blob_path: &str, member: &str) -> String {
    if blob_path == "." {
        member.to_owned()
    } else {
        format!("{blob_path} → {member}")
    }
}

fn check_blob(config: &MediaSessionConfig, path: &str, problems: &mut Problems) {
    match config.mp_uri.as_ref() {
        Some(uri) if uri.contains("://") => {}
        Some(uri) => problems.error(
            blob_member(path, "mpUri"),
            format!("`{uri}` is not a URI (scheme://host:port/path)"),
        ),
        None => problems.error(
            blob_member(path, "mpUri"),
            "must be a string: where the edge reaches the media processor",
        ),
    }
    match config.mp_media_session_id.as_ref() {
        Some(id) if Uuid::parse_str(id).is_ok() => {}
        Some(id) => problems.error(
            blob_member(path, "mpMediaSessionId"),
            format!("`{id}` is not a UUID"),
        ),
        None => problems.error(
            blob_member(path, "mpMediaSessionId"),
            "a blob needs the media session id",
        ),
    }
    if let Some(id) = config.call_id.as_ref() {
        if Uuid::parse_str(id).is_err() {
            problems.error(blob_member(path, "callId"), format!("`{id}` is not a UUID"));
        }
    }
    for (member, id) in config.context_ids() {
        if Uuid::parse_str(id).is_err() {
            problems.error(
                blob_member(path, &member),
                format!("context id `{id}` is not a UUID"),
            );
        }
    }
    let audio = config.audio_render_contexts.as_ref().map_or(0, Vec::len)
        + config.audio_source_contexts.as_ref().map_or(0, Vec::len);
    let video = config.video_render_contexts.as_ref().map_or(0, Vec::len)
        + config.video_source_contexts.as_ref().map_or(0, Vec::len);
    if audio + video == 0
        && config
            .data_render_contexts
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        problems.warning(
            path,
            "the blob has no socket contexts: the session carries no media",
        );
    }
    if let Some(format) = config.supported_audio_format.as_ref() {
        if !format.is_known() {
            problems.warning(
                blob_member(path, "supportedAudioFormat"),
                format!(
                    "unknown audio format `{format}`; known: {}",
                    crate::AudioFormat::KNOWN.join(", ")
                ),
            );
        }
    }
}

fn check_service_call(call: &Call, path: &str, problems: &mut Problems) {
    if let Some(state) = call.state.as_ref() {
        if !state.is_known() {
            problems.warning(
                join_path(path, "state"),
                format!("unknown call state `{state}`"),
            );
        }
    }
    if let Some(media) = call.media_config.as_ref() {
        if media.kind() == MediaConfigKind::AppHosted {
            check_media_config(media, &join_path(path, "mediaConfig"), problems);
        }
    }
}

fn check_notification(notification: &CommsNotification, path: &str, problems: &mut Problems) {
    if notification.resource.is_absent() && notification.resource_url.is_absent() {
        problems.error(
            join_path(path, "resource"),
            "a notification needs the `resource` it is about",
        );
    }
    if let Some(change) = notification.change_type.as_ref() {
        if !change.is_known() {
            problems.warning(
                join_path(path, "changeType"),
                format!("unknown change type `{change}`"),
            );
        }
    }
    match notification.resources(path) {
        Err(err) => problems.error(join_path(path, "resourceData"), err.to_string()),
        Ok(resources) => {
            for (resource_path, resource) in resources {
                match resource {
                    Resource::Call(call) => check_service_call(&call, &resource_path, problems),
                    Resource::Participant(participant) => {
                        check_participant(&participant, &resource_path, problems)
                    }
                    Resource::Other(_) => {}
                }
            }
        }
    }
}

fn check_participant(participant: &Participant, path: &str, problems: &mut Problems) {
    for (i, stream) in participant
        .media_streams
        .as_ref()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let stream_path = join_path(path, &format!("mediaStreams[{i}]"));
        if stream.source_id.is_absent() {
            problems.warning(
                join_path(&stream_path, "sourceId"),
                "a media stream without its media source id",
            );
        }
        if let Some(media_type) = stream.media_type.as_ref() {
            if !media_type.is_known() {
                problems.warning(
                    join_path(&stream_path, "mediaType"),
                    format!("unknown media type `{media_type}`"),
                );
            }
        }
    }
}
