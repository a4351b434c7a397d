//! Every test vector (the seed's examples, the Graph documentation's) parses, round-trips to an equal JSON value,
//! and validates without errors.
#![allow(clippy::unwrap_used)]

mod common;

use mediaproc_blob::{Document, DocumentKind, Resource, Severity, parse_document, validate};

#[test]
fn every_vector_round_trips_losslessly_and_validates() {
    let vectors = common::all_vectors();
    assert!(
        vectors.len() >= 15,
        "expected the 15 seed vectors at least, found {}",
        vectors.len()
    );
    for path in vectors {
        let bytes = std::fs::read(&path).unwrap();
        let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let document =
            parse_document(&bytes).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(
            document.to_value(),
            original,
            "{} does not round-trip",
            path.display()
        );
        let errors: Vec<_> = validate(&document)
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
}

#[test]
fn seed_documents_are_recognised_as_their_kind() {
    let cases = [
        ("p2p-service-hosted.request.json", DocumentKind::Call),
        ("p2p-service-hosted.response.json", DocumentKind::Call),
        (
            "p2p.notification-establishing.json",
            DocumentKind::Notifications,
        ),
        ("media-session-config.blob.json", DocumentKind::Blob),
        (
            "scheduled-meeting.notification-roster.json",
            DocumentKind::Notifications,
        ),
    ];
    for (name, kind) in cases {
        let bytes = serde_json::to_vec(&common::vector(name)).unwrap();
        assert_eq!(parse_document(&bytes).unwrap().kind(), kind, "{name}");
    }
}

#[test]
fn roster_notification_types_participants_and_their_media_source_ids() {
    let bytes = serde_json::to_vec(&common::vector(
        "scheduled-meeting.notification-roster.json",
    ))
    .unwrap();
    let Document::Notifications(envelope) = parse_document(&bytes).unwrap() else {
        panic!("not notifications")
    };
    let notification = &envelope.value.as_ref().unwrap()[0];
    let resources = notification.resources("value[0]").unwrap();
    assert_eq!(resources.len(), 2);
    assert_eq!(resources[1].0, "value[0].resourceData[1]");
    let Resource::Participant(john) = &resources[0].1 else {
        panic!("not a participant")
    };
    let streams = john.media_streams.as_ref().unwrap();
    let ids: Vec<_> = streams
        .iter()
        .map(|s| s.source_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(ids, ["1", "2", "8"]);
    assert_eq!(john.is_muted.as_ref(), Some(&true));
}

#[test]
fn lobby_notification_reports_the_guest_in_the_lobby() {
    let bytes =
        serde_json::to_vec(&common::vector("guest-join.notification-roster-lobby.json")).unwrap();
    let Document::Notifications(envelope) = parse_document(&bytes).unwrap() else {
        panic!("not notifications")
    };
    let resources = envelope.value.as_ref().unwrap()[0]
        .resources("value[0]")
        .unwrap();
    let Resource::Participant(guest) = &resources[0].1 else {
        panic!("not a participant")
    };
    assert_eq!(guest.is_in_lobby.as_ref(), Some(&true));
    let identity = guest.info.as_ref().unwrap().identity.as_ref().unwrap();
    assert_eq!(identity.primary().unwrap().0, "guest");
}

#[test]
fn unknown_members_and_odata_types_survive_and_nulls_stay_null() {
    let text = r##"{
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "updated",
            "resource": "/app/calls/1",
            "futureMember": {"nested": [1, 2.5, null, true]},
            "resourceData": [
                {"@odata.type": "#microsoft.graph.futureResource", "x": 1},
                {"@odata.type": "#microsoft.graph.call", "state": "someFutureState", "id": "1", "subject": null,
                 "mediaConfig": {"@odata.type": "#microsoft.graph.futureMediaConfig", "knob": 3},
                 "source": {"identity": {"acsUser": {"id": "8:acs:1"}}}}
            ]
        }]
    }"##;
    let original: serde_json::Value = serde_json::from_str(text).unwrap();
    let document = parse_document(text.as_bytes()).unwrap();
    assert_eq!(document.to_value(), original);
    let Document::Notifications(envelope) = &document else {
        panic!()
    };
    let resources = envelope.value.as_ref().unwrap()[0]
        .resources("value[0]")
        .unwrap();
    assert!(matches!(resources[0].1, Resource::Other(_)));
    let Resource::Call(call) = &resources[1].1 else {
        panic!()
    };
    assert_eq!(call.state.as_ref().unwrap().as_str(), "someFutureState");
    assert!(
        call.subject.is_present() && call.subject.as_ref().is_none(),
        "null must stay null, not absent"
    );
}
