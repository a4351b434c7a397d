//! Validation reports every problem at once, each with its JSON path.
#![allow(clippy::unwrap_used)]

mod common;

use mediaproc_blob::{
    Document, Problem, Scenario, Severity, parse_document, validate, validate_call_request,
};

fn problems_of(value: serde_json::Value) -> Vec<Problem> {
    let document = parse_document(&serde_json::to_vec(&value).unwrap()).unwrap();
    validate(&document)
}

fn has(problems: &[Problem], severity: Severity, path: &str, words: &str) -> bool {
    problems
        .iter()
        .any(|p| p.severity == severity && p.path == path && p.message.contains(words))
}

#[test]
fn p2p_without_targets_and_http_callback_reports_both_at_once() {
    let mut body = common::vector("p2p-service-hosted.request.json");
    body.as_object_mut().unwrap().remove("targets");
    body["callbackUri"] = "http://bot.contoso.com/callback".into();
    let problems = problems_of(body);
    assert!(
        has(&problems, Severity::Error, "targets", "needs `targets`"),
        "{problems:?}"
    );
    assert!(
        has(&problems, Severity::Error, "callbackUri", "https"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn loopback_http_callback_is_only_a_warning() {
    let mut body = common::vector("p2p-service-hosted.request.json");
    body["callbackUri"] = "http://127.0.0.1:9000/callback".into();
    let problems = problems_of(body);
    assert!(
        has(&problems, Severity::Warning, "callbackUri", "emulator"),
        "{problems:?}"
    );
}

#[test]
fn meeting_join_without_chat_info_or_meeting_info() {
    let mut body = common::vector("scheduled-meeting-service-hosted.request.json");
    body.as_object_mut().unwrap().remove("chatInfo");
    let problems = problems_of(body.clone());
    assert!(
        has(
            &problems,
            Severity::Error,
            "chatInfo",
            "meeting join needs `chatInfo`"
        ),
        "{problems:?}"
    );
    body.as_object_mut().unwrap().remove("meetingInfo");
    // Without either it no longer looks like a meeting join: it is a call with neither targets nor a meeting.
    let problems = problems_of(body.clone());
    assert!(
        has(
            &problems,
            Severity::Error,
            "targets",
            "or `chatInfo` and `meetingInfo`"
        ),
        "{problems:?}"
    );
    // Told that it is a meeting join, both are reported.
    let Document::Call(call) = parse_document(&serde_json::to_vec(&body).unwrap()).unwrap() else {
        panic!()
    };
    let problems = validate_call_request(&call, Some(Scenario::ScheduledMeeting));
    assert!(
        has(&problems, Severity::Error, "chatInfo", "chatInfo"),
        "{problems:?}"
    );
    assert!(
        has(&problems, Severity::Error, "meetingInfo", "meetingInfo"),
        "{problems:?}"
    );
}

#[test]
fn guest_join_needs_a_guest_identity_in_source() {
    let mut body = common::vector("guest-join-service-hosted.request.json");
    let identity = body["source"]["identity"].as_object_mut().unwrap();
    let guest = identity.remove("guest").unwrap();
    identity.insert("user".into(), guest);
    let Document::Call(call) = parse_document(&serde_json::to_vec(&body).unwrap()).unwrap() else {
        panic!()
    };
    let problems = validate_call_request(&call, Some(Scenario::GuestJoin));
    assert!(
        has(
            &problems,
            Severity::Error,
            "source.identity.guest",
            "needs a `guest` identity"
        ),
        "{problems:?}"
    );
}

#[test]
fn unknown_modalities_are_errors_at_their_index() {
    let mut body = common::vector("p2p-service-hosted.request.json");
    body["requestedModalities"] = serde_json::json!(["audio", "hologram"]);
    let problems = problems_of(body);
    assert!(
        has(
            &problems,
            Severity::Error,
            "requestedModalities[1]",
            "unknown modality `hologram`"
        ),
        "{problems:?}"
    );
}

#[test]
fn app_hosted_blob_that_is_not_a_configuration_or_has_bad_context_ids() {
    let mut body = common::vector("p2p-app-hosted.request.json");
    body["mediaConfig"]["blob"] = "42".into();
    let problems = problems_of(body.clone());
    assert!(
        has(
            &problems,
            Severity::Error,
            "mediaConfig.blob",
            "not a media session configuration"
        ),
        "{problems:?}"
    );

    let mut blob: serde_json::Value = common::vector("media-session-config.blob.json");
    blob["audioSourceContexts"] = serde_json::json!(["not-a-uuid"]);
    body["mediaConfig"]["blob"] = serde_json::to_string(&blob).unwrap().into();
    let problems = problems_of(body.clone());
    assert!(
        has(
            &problems,
            Severity::Error,
            "mediaConfig.blob → audioSourceContexts[0]",
            "`not-a-uuid` is not a UUID"
        ),
        "{problems:?}"
    );

    blob["audioSourceContexts"] = serde_json::json!([17]);
    body["mediaConfig"]["blob"] = serde_json::to_string(&blob).unwrap().into();
    let problems = problems_of(body);
    assert!(
        has(
            &problems,
            Severity::Error,
            "mediaConfig.blob.audioSourceContexts[0]",
            "expected a string"
        ),
        "{problems:?}"
    );
}

#[test]
fn server_generated_members_in_a_request_are_warnings() {
    let mut body = common::vector("p2p-service-hosted.request.json");
    body["myParticipantId"] = "x".into();
    body["activeModalities"] = serde_json::json!([]);
    let problems = problems_of(body);
    assert!(
        has(
            &problems,
            Severity::Warning,
            "myParticipantId",
            "ignored by the service on POST"
        ),
        "{problems:?}"
    );
    assert!(
        has(&problems, Severity::Warning, "activeModalities", "ignored"),
        "{problems:?}"
    );
    assert!(
        problems.iter().all(|p| p.severity == Severity::Warning),
        "{problems:?}"
    );
}

#[test]
fn unknown_media_config_type_is_an_error() {
    let mut body = common::vector("p2p-service-hosted.request.json");
    body["mediaConfig"]["@odata.type"] = "#microsoft.graph.futureMediaConfig".into();
    let problems = problems_of(body);
    assert!(
        has(
            &problems,
            Severity::Error,
            "mediaConfig.@odata.type",
            "unknown media config"
        ),
        "{problems:?}"
    );
}

#[test]
fn problems_print_as_one_line_with_path() {
    let problem = Problem {
        severity: Severity::Error,
        path: "targets".into(),
        message: "x".into(),
    };
    assert_eq!(problem.to_string(), "error: targets: x");
}
