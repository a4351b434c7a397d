//! Property tests: generated configurations and calls round-trip; arbitrary input never panics.
#![allow(clippy::unwrap_used)]

use mediaproc_blob::{
    AudioFormat, AudioSocketSpec, Call, Direction, MediaSessionConfig, SessionSpec,
    VideoColorFormat, VideoSocketSpec, parse_document,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::SendRecv),
        Just(Direction::SendOnly),
        Just(Direction::RecvOnly),
        Just(Direction::Inactive)
    ]
}

fn audio_format() -> impl Strategy<Value = AudioFormat> {
    prop_oneof![
        Just(AudioFormat::Pcm16K),
        Just(AudioFormat::Pcm8K),
        Just(AudioFormat::Pcm48K),
        "[A-Za-z0-9]{1,12}".prop_map(|s| AudioFormat::from_text(&s)),
    ]
}

prop_compose! {
    fn session_spec()(
        audio in proptest::option::of((direction(), audio_format(), any::<bool>())),
        video in proptest::collection::vec((direction(), any::<bool>()), 0..=10),
        vbss in any::<bool>(),
        data in any::<bool>(),
        mp_uri in "[a-z]{2,5}://[a-z0-9.]{1,20}:[0-9]{1,5}/[A-Za-z]{0,12}",
        token in proptest::option::of("[ -~]{0,40}"),
        seed in any::<u128>(),
    ) -> (SessionSpec, u128) {
        let audio = audio.map(|(direction, format, unmixed)| AudioSocketSpec {
            direction,
            format,
            unmixed_meeting_audio: unmixed && direction.receives(),
            ..AudioSocketSpec::default()
        });
        let video = video
            .into_iter()
            .map(|(direction, h264)| VideoSocketSpec {
                direction,
                receive_color_format: if h264 { VideoColorFormat::H264 } else { VideoColorFormat::Nv12 },
                ..VideoSocketSpec::default()
            })
            .collect();
        (SessionSpec { mp_uri, audio, video, vbss, data, edge_token: token, ..SessionSpec::default() }, seed)
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z@.]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A call-shaped document: known members with values of the right type, plus arbitrary unknown members.
fn call_document() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(prop_oneof![
            Just("establishing"),
            Just("established"),
            Just("terminated"),
            Just("fooBar")
        ]),
        proptest::option::of("[a-z0-9-]{1,36}"),
        proptest::collection::vec(
            prop_oneof![Just("audio"), Just("video"), Just("data"), Just("x")],
            0..3,
        ),
        proptest::option::of(prop_oneof![
            Just(Value::Null),
            Just(json!({"@odata.type": "#microsoft.graph.chatInfo", "threadId": "19:a"}))
        ]),
        proptest::collection::btree_map("x[a-zA-Z]{1,8}", json_value(), 0..4),
        proptest::option::of(json_value()),
    )
        .prop_map(|(state, id, modalities, chat, extra, subject)| {
            let mut call = serde_json::Map::new();
            call.insert("@odata.type".into(), "#microsoft.graph.call".into());
            if let Some(state) = state {
                call.insert("state".into(), state.into());
            }
            if let Some(id) = id {
                call.insert("id".into(), id.into());
            }
            call.insert("requestedModalities".into(), json!(modalities));
            if let Some(chat) = chat {
                call.insert("chatInfo".into(), chat);
            }
            if let Some(subject) = subject.filter(|s| s.is_string() || s.is_null()) {
                call.insert("subject".into(), subject);
            }
            call.extend(extra);
            Value::Object(call)
        })
}

proptest! {
    #[test]
    fn built_configurations_round_trip_through_the_blob((spec, seed) in session_spec()) {
        let mut counter = seed;
        let mut next = || { counter = counter.wrapping_add(1); Uuid::from_u128(counter) };
        let config = spec.build_with(&mut next).unwrap();
        let blob = config.to_blob();
        let parsed = MediaSessionConfig::from_blob(&blob).unwrap();
        prop_assert_eq!(&parsed, &config);
        prop_assert_eq!(parsed.to_blob(), blob);
        let expected_video = spec.video.iter().filter(|v| v.direction.receives()).count() + usize::from(spec.vbss);
        prop_assert_eq!(config.video_render_contexts.as_ref().unwrap().len(), expected_video);
    }

    #[test]
    fn call_documents_round_trip_losslessly(document in call_document()) {
        let call: Call = serde_json::from_value(document.clone()).unwrap();
        prop_assert_eq!(serde_json::to_value(&call).unwrap(), document.clone());
        let parsed = parse_document(&serde_json::to_vec(&document).unwrap()).unwrap();
        prop_assert_eq!(parsed.to_value(), document);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(document) = parse_document(&bytes) {
            prop_assert_eq!(document.to_value(), value);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_document(&bytes);
    }
}
