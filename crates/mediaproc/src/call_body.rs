//! `mediaproc call-body`.

use mediaproc_blob::{
    CallRequestSpec, Document, Maybe, MediaChoice, MediaInfo, MediaSessionConfig, MeetingSpec,
    Modality, Party, Scenario, SessionSpec, Severity, parse_document, validate_call_request,
};
use uuid::Uuid;

use crate::{CallBodyArgs, Failure, output};

pub fn run(args: &CallBodyArgs) -> Result<(), Failure> {
    let (spec, verbatim_blob) = spec_from_args(args)?;
    let call = spec.build();
    if args.permissions {
        let permissions = call
            .required_permissions()
            .ok_or_else(|| Failure::invalid("the body matches no known scenario"))?;
        for permission in permissions {
            output::line(permission.as_str());
        }
        return Ok(());
    }
    let mut errors = Vec::new();
    for problem in validate_call_request(&call, Some(spec.scenario)) {
        // A blob the user asked to use verbatim was already reported as a warning.
        if verbatim_blob && problem.path.starts_with("mediaConfig.blob") {
            continue;
        }
        match problem.severity {
            Severity::Error => errors.push(problem.to_string()),
            Severity::Warning => output::error_line(&problem.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Failure {
            code: crate::EXIT_INVALID,
            lines: errors,
        });
    }
    let text = if args.compact {
        serde_json::to_string(&call)
    } else {
        serde_json::to_string_pretty(&call)
    };
    output::line(
        &text.map_err(|err| Failure::invalid(format!("cannot serialize the body: {err}")))?,
    );
    Ok(())
}

/// Builds the request spec; the flag says whether the blob is used verbatim (not a media session configuration).
fn spec_from_args(args: &CallBodyArgs) -> Result<(CallRequestSpec, bool), Failure> {
    let scenario = args.scenario;
    let need = |flag: &str, value: &Option<String>| -> Result<String, Failure> {
        value.clone().ok_or_else(|| {
            Failure::usage(format!("--scenario {} needs --{flag}", scenario.as_str()))
        })
    };
    let mut verbatim = false;
    let media = match args.media.as_str() {
        "app" => {
            if !args.prefetch.is_empty() {
                return Err(Failure::usage(
                    "--prefetch is for service-hosted media (--media service)",
                ));
            }
            let blob = match &args.blob {
                Some(path) => {
                    let (blob, is_config) = read_blob(path)?;
                    verbatim = !is_config;
                    blob
                }
                None => {
                    let config = SessionSpec::default()
                        .build()
                        .map_err(|err| Failure::invalid(err.to_string()))?;
                    let session = config
                        .mp_media_session_id
                        .as_ref()
                        .cloned()
                        .unwrap_or_default();
                    output::error_line(&format!(
                        "generated a new media session configuration (mpMediaSessionId {session})"
                    ));
                    config.to_blob()
                }
            };
            MediaChoice::AppHosted { blob }
        }
        _ => {
            if args.blob.is_some() {
                return Err(Failure::usage(
                    "--blob is for app-hosted media (--media app)",
                ));
            }
            MediaChoice::ServiceHosted {
                pre_fetch_media: args.prefetch.iter().map(|p| prefetch(p)).collect(),
            }
        }
    };
    let mut targets: Vec<Party> = args
        .target_user
        .iter()
        .map(|user| Party::parse(user))
        .collect();
    let mut meeting = None;
    let mut guest = None;
    match scenario {
        Scenario::PeerToPeer => {
            if targets.is_empty() {
                return Err(Failure::usage(
                    "--scenario p2p needs --target-user ID[:NAME]",
                ));
            }
            if args.thread_id.is_some() || args.organizer.is_some() || args.guest.is_some() {
                return Err(Failure::usage(
                    "--thread-id, --organizer and --guest are for meeting joins, not p2p",
                ));
            }
        }
        Scenario::ScheduledMeeting | Scenario::ChannelMeeting | Scenario::GuestJoin => {
            let message_id = match scenario {
                Scenario::ScheduledMeeting => {
                    args.message_id.clone().unwrap_or_else(|| "0".to_owned())
                }
                _ => need("message-id", &args.message_id)?,
            };
            meeting = Some(MeetingSpec {
                thread_id: need("thread-id", &args.thread_id)?,
                message_id,
                organizer: Party {
                    tenant_id: args.tenant.clone(),
                    ..Party::parse(&need("organizer", &args.organizer)?)
                },
                allow_conversation_without_host: true,
            });
            if scenario == Scenario::GuestJoin {
                guest = Some(Party::parse(&need("guest", &args.guest)?));
            } else if args.guest.is_some() {
                return Err(Failure::usage("--guest is for --scenario guest-join"));
            }
        }
    }
    // --tenant is the tenant of the users named: the targets of a p2p call, the organizer of a meeting.
    for target in &mut targets {
        target.tenant_id.clone_from(&args.tenant);
    }
    Ok((
        CallRequestSpec {
            scenario,
            callback_uri: args.callback.clone(),
            media,
            modalities: vec![Modality::Audio],
            targets,
            meeting,
            guest,
        },
        verbatim,
    ))
}

/// `URI[=RESOURCE_ID]`: the part after the last `=` is the resource id when it is a UUID.
fn prefetch(text: &str) -> MediaInfo {
    let (uri, resource_id) = match text.rsplit_once('=') {
        Some((uri, id)) if Uuid::parse_str(id).is_ok() => (uri.to_owned(), id.to_owned()),
        _ => (text.to_owned(), Uuid::new_v4().to_string()),
    };
    MediaInfo {
        uri: Maybe::Value(uri),
        resource_id: Maybe::Value(resource_id),
        ..MediaInfo::default()
    }
}

/// Reads `--blob FILE`: a blob, a JSON string holding one, an appHostedMediaConfig, or other text used verbatim.
fn read_blob(path: &std::path::Path) -> Result<(String, bool), Failure> {
    let (name, bytes) = output::read_input(Some(path), mediaproc_blob::MAX_DOCUMENT_BYTES)
        .map_err(Failure::invalid)?;
    let text = String::from_utf8(bytes).map_err(|err| {
        Failure::invalid(format!(
            "{name}: not valid UTF-8 at byte offset {}",
            err.utf8_error().valid_up_to()
        ))
    })?;
    let text = text.trim();
    let config: Option<MediaSessionConfig> = match parse_document(text.as_bytes()) {
        Ok(Document::Blob { config, .. }) => Some(*config),
        Ok(Document::MediaConfig(media)) => Some(
            media
                .media_session_config(".")
                .map_err(|err| Failure::invalid(format!("{name}: {err}")))?,
        ),
        _ => None,
    };
    match config {
        Some(config) => Ok((config.to_blob(), true)),
        None => {
            output::error_line(&format!(
                "warning: {name} is not a media session configuration; its text is used verbatim as the blob"
            ));
            Ok((text.to_owned(), false))
        }
    }
}
