//! The scenario builders reproduce the seed's request bodies, and the permissions follow the seed's table.
#![allow(clippy::unwrap_used)]

mod common;

use mediaproc_blob::{
    CallRequestSpec, Maybe, MediaChoice, MediaInfo, MeetingSpec, Modality, Party, Permission,
    Scenario, SessionSpec, required_permissions, validate_call_request,
};
use uuid::Uuid;

const CALLBACK: &str = "https://bot.contoso.com/callback";
const TENANT: &str = "aa67bd4c-8475-432d-bd41-39f255720e0a";
const PLACEHOLDER: &str = "<Media Session Configuration>";

fn john() -> Party {
    Party {
        id: "112f7296-5fa4-42ca-bae8-6a692b15d4b8".into(),
        display_name: Some("John".into()),
        tenant_id: None,
    }
}

fn meeting(thread_id: &str, message_id: &str) -> MeetingSpec {
    MeetingSpec {
        thread_id: thread_id.into(),
        message_id: message_id.into(),
        organizer: Party {
            id: "5810cede-f3cc-42eb-b2c1-e9bd5d53ec96".into(),
            display_name: Some("Bob".into()),
            tenant_id: Some(TENANT.into()),
        },
        allow_conversation_without_host: true,
    }
}

fn prompts() -> Vec<MediaInfo> {
    [
        (
            "https://cdn.contoso.com/beep.wav",
            "f8971b04-b53e-418c-9222-c82ce681a582",
        ),
        (
            "https://cdn.contoso.com/cool.wav",
            "86dc814b-c172-4428-9112-60f8ecae1edb",
        ),
    ]
    .into_iter()
    .map(|(uri, id)| MediaInfo {
        uri: Maybe::Value(uri.into()),
        resource_id: Maybe::Value(id.into()),
        ..Default::default()
    })
    .collect()
}

fn spec(scenario: Scenario, media: MediaChoice) -> CallRequestSpec {
    CallRequestSpec {
        scenario,
        callback_uri: CALLBACK.into(),
        media,
        modalities: vec![Modality::Audio],
        targets: Vec::new(),
        meeting: None,
        guest: None,
    }
}

const SCHEDULED_THREAD: &str =
    "19:meeting_Win6Ydo4wsMijFjZS00ZGVjLTk5MGUtOTRjNWY2NmNkYTFm@thread.v2";
const CHANNEL_THREAD: &str = "19:cbee7c1c860e465f8258e3cebf7bee0d@thread.skype";

fn seed_specs() -> Vec<(&'static str, CallRequestSpec, Vec<Permission>)> {
    let service = |pre_fetch_media| MediaChoice::ServiceHosted { pre_fetch_media };
    let app = || MediaChoice::AppHosted {
        blob: PLACEHOLDER.into(),
    };
    vec![
        (
            "p2p-service-hosted.request.json",
            CallRequestSpec {
                targets: vec![john()],
                ..spec(Scenario::PeerToPeer, service(Vec::new()))
            },
            vec![Permission::CallsInitiateAll],
        ),
        (
            "p2p-app-hosted.request.json",
            CallRequestSpec {
                targets: vec![john()],
                ..spec(Scenario::PeerToPeer, app())
            },
            vec![
                Permission::CallsInitiateAll,
                Permission::CallsAccessMediaAll,
            ],
        ),
        (
            "scheduled-meeting-service-hosted.request.json",
            CallRequestSpec {
                meeting: Some(meeting(SCHEDULED_THREAD, "0")),
                ..spec(Scenario::ScheduledMeeting, service(prompts()))
            },
            vec![Permission::CallsJoinGroupCallsAll],
        ),
        (
            "scheduled-meeting-app-hosted.request.json",
            CallRequestSpec {
                meeting: Some(meeting(SCHEDULED_THREAD, "0")),
                ..spec(Scenario::ScheduledMeeting, app())
            },
            vec![
                Permission::CallsJoinGroupCallsAll,
                Permission::CallsAccessMediaAll,
            ],
        ),
        (
            "channel-meeting-service-hosted.request.json",
            CallRequestSpec {
                meeting: Some(meeting(CHANNEL_THREAD, "1533758867081")),
                ..spec(Scenario::ChannelMeeting, service(prompts()))
            },
            vec![Permission::CallsJoinGroupCallsAll],
        ),
        (
            "guest-join-service-hosted.request.json",
            CallRequestSpec {
                meeting: Some(meeting(CHANNEL_THREAD, "1533758867081")),
                guest: Some(Party {
                    id: "d7a3b999-17ac-4bca-9e77-e6a730d2ec2e".into(),
                    display_name: Some("Guest User".into()),
                    tenant_id: None,
                }),
                ..spec(Scenario::GuestJoin, service(prompts()))
            },
            vec![Permission::CallsJoinGroupCallsAsGuestAll],
        ),
    ]
}

#[test]
fn each_builder_reproduces_the_seed_request_body() {
    for (name, spec, _) in seed_specs() {
        let built = serde_json::to_value(spec.build()).unwrap();
        assert_eq!(built, common::vector(name), "{name}");
    }
}

#[test]
fn permissions_follow_the_seed_table_and_notes() {
    for (name, spec, expected) in seed_specs() {
        let call = spec.build();
        assert_eq!(call.required_permissions().unwrap(), expected, "{name}");
        assert_eq!(Scenario::detect(&call), Some(spec.scenario), "{name}");
    }
    assert_eq!(
        required_permissions(Scenario::PeerToPeer, false, 3),
        vec![Permission::CallsInitiateGroupCallsAll]
    );
    assert_eq!(
        required_permissions(Scenario::GuestJoin, true, 0)
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>(),
        ["Calls.JoinGroupCallsAsGuest.All", "Calls.AccessMedia.All"]
    );
}

#[test]
fn built_bodies_with_a_real_blob_validate_cleanly() {
    let blob = SessionSpec::default().build().unwrap().to_blob();
    for (name, mut spec, _) in seed_specs() {
        if let MediaChoice::AppHosted { blob: b } = &mut spec.media {
            b.clone_from(&blob);
        }
        let problems = validate_call_request(&spec.build(), Some(spec.scenario));
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

#[test]
fn app_hosted_body_carries_the_blob_as_a_json_string() {
    let config = SessionSpec {
        session_id: Some(Uuid::nil()),
        ..SessionSpec::default()
    }
    .build()
    .unwrap();
    let call = CallRequestSpec {
        targets: vec![john()],
        ..spec(
            Scenario::PeerToPeer,
            MediaChoice::AppHosted {
                blob: config.to_blob(),
            },
        )
    }
    .build();
    let value = serde_json::to_value(&call).unwrap();
    assert_eq!(
        value["mediaConfig"]["@odata.type"],
        "#microsoft.graph.appHostedMediaConfig"
    );
    let blob = value["mediaConfig"]["blob"].as_str().unwrap();
    assert_eq!(blob, config.to_blob());
    let parsed = call
        .media_config
        .as_ref()
        .unwrap()
        .media_session_config("mediaConfig")
        .unwrap();
    assert_eq!(parsed, config);
}
