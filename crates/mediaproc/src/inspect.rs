//! `mediaproc inspect`: recognise, summarise and validate a document.

use mediaproc_blob::{
    Call, CommsNotification, Document, IdentitySet, MediaConfig, MediaConfigKind,
    MediaSessionConfig, MeetingInfoKind, Participant, ParticipantInfo, Resource, Scenario,
    Severity, parse_document, validate,
};

use crate::{Failure, InspectArgs, output};

pub fn run(args: &InspectArgs) -> Result<(), Failure> {
    let (name, bytes) =
        output::read_input(args.file.as_deref(), mediaproc_blob::MAX_DOCUMENT_BYTES)
            .map_err(Failure::invalid)?;
    let document =
        parse_document(&bytes).map_err(|err| Failure::invalid(format!("{name}: {err}")))?;
    let problems = validate(&document);
    let (errors, warnings): (Vec<_>, Vec<_>) =
        problems.iter().partition(|p| p.severity == Severity::Error);

    if args.json {
        let value = document.to_value();
        let text = serde_json::to_string_pretty(&value)
            .map_err(|err| Failure::invalid(format!("cannot serialize: {err}")))?;
        output::line(&text);
    } else {
        let mut summary = Summary::default();
        summarise(&document, &mut summary);
        if !warnings.is_empty() {
            summary.field("warnings", warnings.len().to_string());
        }
        for line in summary.lines {
            output::line(&line);
        }
    }
    for warning in &warnings {
        output::error_line(&format!("{name}: {warning}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: crate::EXIT_INVALID,
            lines: errors.iter().map(|e| format!("{name}: {e}")).collect(),
        })
    }
}

#[derive(Default)]
struct Summary {
    lines: Vec<String>,
}

impl Summary {
    fn field(&mut self, name: &str, value: impl AsRef<str>) {
        self.lines.push(format!("{name:<13}{}", value.as_ref()));
    }

    fn indented(&mut self, depth: usize, text: impl AsRef<str>) {
        self.lines.push(format!(
            "{:width$}{}",
            "",
            text.as_ref(),
            width = 13 + depth * 2
        ));
    }
}

fn summarise(document: &Document, out: &mut Summary) {
    match document {
        Document::Call(call) => {
            let role = if call.id.is_absent() && call.state.is_absent() {
                "create-call request"
            } else {
                "call object"
            };
            out.field("kind", format!("call ({role})"));
            summarise_call(call, out);
        }
        Document::Notifications(envelope) => {
            let list = envelope
                .value
                .as_ref()
                .map(Vec::as_slice)
                .unwrap_or_default();
            out.field(
                "kind",
                format!(
                    "commsNotifications ({} notification{})",
                    list.len(),
                    plural(list.len())
                ),
            );
            for (i, notification) in list.iter().enumerate() {
                summarise_notification(notification, &format!("value[{i}]"), out);
            }
        }
        Document::Notification(notification) => {
            out.field("kind", "commsNotification");
            summarise_notification(notification, ".", out);
        }
        Document::Participant(participant) => {
            out.field("kind", "participant");
            summarise_participant(participant, 0, out);
        }
        Document::MediaConfig(media) => {
            out.field("kind", "mediaConfig");
            summarise_media(media, out);
        }
        Document::Blob { config, quoted } => {
            out.field(
                "kind",
                if *quoted {
                    "media session configuration (escaped blob)"
                } else {
                    "media session configuration (blob)"
                },
            );
            summarise_blob(config, out);
        }
        _ => out.field("kind", document.kind().as_str()),
    }
}

fn summarise_call(call: &Call, out: &mut Summary) {
    if let Some(scenario) = Scenario::detect(call) {
        out.field("scenario", scenario.as_str());
    }
    if let Some(id) = call.id.as_ref() {
        out.field("id", id);
    }
    if let Some(state) = call.state.as_ref() {
        out.field("state", state.as_str());
    }
    if let Some(direction) = call.direction.as_ref() {
        out.field("direction", direction.as_str());
    }
    if let Some(modalities) = call.requested_modalities.as_ref() {
        out.field(
            "modalities",
            modalities
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(uri) = call.callback_uri.as_ref() {
        out.field("callback", uri);
    }
    if let Some(source) = call.source.as_ref() {
        out.field("source", participant_info(source));
    }
    for target in call.targets.as_ref().into_iter().flatten() {
        out.field("target", identity_set(target.identity.as_ref()));
    }
    if let Some(chat) = call.chat_info.as_ref() {
        out.field(
            "thread",
            chat.thread_id.as_ref().map_or("?", String::as_str),
        );
    }
    if let Some(meeting) = call.meeting_info.as_ref() {
        let text = match meeting.kind() {
            MeetingInfoKind::Organizer => {
                format!("organizer {}", identity_set(meeting.organizer.as_ref()))
            }
            MeetingInfoKind::Token => "by token".to_owned(),
            MeetingInfoKind::JoinMeetingId => {
                format!(
                    "meeting id {}",
                    meeting.join_meeting_id.as_ref().map_or("?", String::as_str)
                )
            }
            MeetingInfoKind::Other => "unknown meetingInfo".to_owned(),
        };
        out.field("meeting", text);
    }
    if let Some(tenant) = call.tenant_id.as_ref() {
        out.field("tenant", tenant);
    }
    if let Some(media) = call.media_config.as_ref() {
        summarise_media(media, out);
    }
    if let Some(result) = call.result_info.as_ref() {
        let code = result
            .code
            .as_ref()
            .and_then(mediaproc_blob::int_like)
            .map_or("?".to_owned(), |c| c.to_string());
        let message = result.message.as_ref().map_or("", String::as_str);
        out.field("result", format!("{code} {message}").trim_end());
    }
    if let Some(permissions) = call.required_permissions() {
        out.field(
            "permissions",
            permissions
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}

fn summarise_media(media: &MediaConfig, out: &mut Summary) {
    match media.kind() {
        MediaConfigKind::ServiceHosted => {
            let prompts = media.pre_fetch_media.as_ref().map_or(0, Vec::len);
            out.field(
                "media",
                format!(
                    "service hosted, {prompts} prompt{} to prefetch",
                    plural(prompts)
                ),
            );
        }
        MediaConfigKind::AppHosted => match media.media_session_config(".") {
            Ok(config) => {
                out.field("media", "app hosted");
                summarise_blob(&config, out);
            }
            Err(_) => out.field(
                "media",
                "app hosted (the blob is not a media session configuration)",
            ),
        },
        MediaConfigKind::Other => out.field("media", "unknown media config"),
    }
}

fn summarise_blob(config: &MediaSessionConfig, out: &mut Summary) {
    let count = |list: &mediaproc_blob::Maybe<Vec<String>>| {
        list.as_ref()
            .map_or("none".to_owned(), |l| l.len().to_string())
    };
    out.field("mpUri", config.mp_uri.as_ref().map_or("?", String::as_str));
    out.field(
        "session",
        config
            .mp_media_session_id
            .as_ref()
            .map_or("?", String::as_str),
    );
    if let Some(call_id) = config.call_id.as_ref() {
        out.field("callId", call_id);
    }
    out.field(
        "audio",
        format!(
            "{} (render {}, source {}){}",
            config
                .supported_audio_format
                .as_ref()
                .map_or("?", |f| f.as_str()),
            count(&config.audio_render_contexts),
            count(&config.audio_source_contexts),
            if config.receive_unmixed_meeting_audio.as_ref() == Some(&true) {
                ", unmixed"
            } else {
                ""
            },
        ),
    );
    out.field(
        "video",
        format!(
            "render {}, source {}",
            count(&config.video_render_contexts),
            count(&config.video_source_contexts)
        ),
    );
    out.field(
        "data",
        format!(
            "render {}, source {}",
            count(&config.data_render_contexts),
            count(&config.data_source_contexts)
        ),
    );
}

fn summarise_notification(notification: &CommsNotification, path: &str, out: &mut Summary) {
    let change = notification
        .change_type
        .as_ref()
        .map_or("?", |c| c.as_str());
    let resource = notification
        .resource
        .as_ref()
        .or(notification.resource_url.as_ref())
        .map_or("?", String::as_str);
    out.field("notification", format!("{change} {resource}"));
    match notification.resources(path) {
        Ok(resources) => {
            for (_, resource) in resources {
                match resource {
                    Resource::Call(call) => {
                        let state = call.state.as_ref().map_or("?", |s| s.as_str());
                        out.indented(
                            1,
                            format!(
                                "call {} state {state}",
                                call.id.as_ref().map_or("?", String::as_str)
                            ),
                        );
                        if let Some(result) = call.result_info.as_ref() {
                            out.indented(
                                2,
                                format!(
                                    "result {}",
                                    serde_json::to_string(result).unwrap_or_default()
                                ),
                            );
                        }
                    }
                    Resource::Participant(participant) => {
                        summarise_participant(&participant, 1, out)
                    }
                    Resource::Other(value) => {
                        let kind = value
                            .get("@odata.type")
                            .and_then(|t| t.as_str())
                            .unwrap_or("an untyped object");
                        out.indented(1, format!("resource {kind}"));
                    }
                    _ => {}
                }
            }
        }
        Err(err) => out.indented(1, format!("resourceData not understood: {err}")),
    }
}

fn summarise_participant(participant: &Participant, depth: usize, out: &mut Summary) {
    let who = participant
        .info
        .as_ref()
        .map_or("?".to_owned(), participant_info);
    let mut flags = Vec::new();
    if participant.is_muted.as_ref() == Some(&true) {
        flags.push("muted");
    }
    if participant.is_in_lobby.as_ref() == Some(&true) {
        flags.push("in lobby");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    let id = participant.id.as_ref().map_or("?", String::as_str);
    out.indented(depth, format!("participant {id}: {who}{flags}"));
    for stream in participant.media_streams.as_ref().into_iter().flatten() {
        out.indented(
            depth + 1,
            format!(
                "{} sourceId {} {}{}",
                stream.media_type.as_ref().map_or("?", |m| m.as_str()),
                stream.source_id.as_ref().map_or("?", String::as_str),
                stream.direction.as_ref().map_or("?", |d| d.as_str()),
                if stream.server_muted.as_ref() == Some(&true) {
                    " (server muted)"
                } else {
                    ""
                },
            ),
        );
    }
}

fn participant_info(info: &ParticipantInfo) -> String {
    identity_set(info.identity.as_ref())
}

fn identity_set(set: Option<&IdentitySet>) -> String {
    match set.and_then(IdentitySet::primary) {
        Some((kind, identity)) => {
            let id = identity.id.as_ref().map_or("?", String::as_str);
            match identity.display_name.as_ref() {
                Some(name) => format!("{kind} \"{name}\" ({id})"),
                None => format!("{kind} {id}"),
            }
        }
        None => "no identity".to_owned(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
