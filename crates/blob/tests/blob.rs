//! The media session configuration: exact seed layout, builder rules, parse errors.
#![allow(clippy::unwrap_used)]

mod common;

use mediaproc_blob::{
    AudioFormat, AudioSocketSpec, BlobError, Direction, MAX_VIDEO_SOCKETS, MediaSessionConfig,
    SessionSpec, VideoColorFormat, VideoSocketSpec,
};
use uuid::Uuid;

fn id(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap()
}

fn seed_spec() -> SessionSpec {
    SessionSpec {
        mp_uri: "net.tcp://bot.contoso.com:18732/MediaProcessor".into(),
        audio: Some(AudioSocketSpec {
            render_context: Some(id("14778cc4-f54c-43c7-989f-9092e34ef784")),
            source_context: Some(id("a5dcfc9b-5a54-48ef-86f5-1fdd8508741a")),
            ..AudioSocketSpec::default()
        }),
        session_id: Some(id("2379cf46-acf3-4fef-a914-be9627075320")),
        call_id: Some(id("1b69b141-7f1a-4033-9c34-202737190a20")),
        ..SessionSpec::default()
    }
}

#[test]
fn seed_ids_reproduce_the_seed_blob_byte_for_byte() {
    let expected =
        std::fs::read_to_string(common::vectors_dir().join("media-session-config.blob.txt"))
            .unwrap();
    let blob = seed_spec().build().unwrap().to_blob();
    assert_eq!(blob, expected.trim_end());
    // And parsing the seed's blob gives the same configuration back, which writes the same bytes.
    assert_eq!(
        MediaSessionConfig::from_blob(expected.trim_end())
            .unwrap()
            .to_blob(),
        blob
    );
}

#[test]
fn contexts_follow_socket_directions() {
    let cases = [
        (Direction::SendRecv, 1, 1),
        (Direction::RecvOnly, 1, 0),
        (Direction::SendOnly, 0, 1),
        (Direction::Inactive, 0, 0),
    ];
    for (direction, render, source) in cases {
        let spec = SessionSpec {
            audio: Some(AudioSocketSpec {
                direction,
                ..AudioSocketSpec::default()
            }),
            video: vec![
                VideoSocketSpec {
                    direction,
                    ..VideoSocketSpec::default()
                };
                3
            ],
            ..SessionSpec::default()
        };
        let config = spec.build().unwrap();
        assert_eq!(
            config.audio_render_contexts.as_ref().unwrap().len(),
            render,
            "{direction:?}"
        );
        assert_eq!(
            config.audio_source_contexts.as_ref().unwrap().len(),
            source,
            "{direction:?}"
        );
        assert_eq!(
            config.video_render_contexts.as_ref().unwrap().len(),
            3 * render,
            "{direction:?}"
        );
        assert_eq!(
            config.video_source_contexts.as_ref().unwrap().len(),
            3 * source,
            "{direction:?}"
        );
    }
}

#[test]
fn random_ids_are_distinct_v4_uuids() {
    let spec = SessionSpec {
        video: vec![VideoSocketSpec::default(); 2],
        vbss: true,
        data: true,
        ..SessionSpec::default()
    };
    let config = spec.build().unwrap();
    let mut ids: Vec<String> = config
        .context_ids()
        .into_iter()
        .map(|(_, id)| id.to_owned())
        .collect();
    ids.push(config.mp_media_session_id.as_ref().unwrap().clone());
    ids.push(config.call_id.as_ref().unwrap().clone());
    // audio 2 + video 4 + vbss 1 + data 2 + session + call
    assert_eq!(ids.len(), 11);
    for id in &ids {
        assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 4, "{id}");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 11, "ids must be distinct");
    assert_eq!(
        config.video_render_contexts.as_ref().unwrap().len(),
        3,
        "two video sockets plus VBSS"
    );
    assert_eq!(config.data_render_contexts.as_ref().unwrap().len(), 1);
}

#[test]
fn without_data_socket_data_contexts_are_null_and_video_lists_empty() {
    let blob = SessionSpec::default().build().unwrap().to_blob();
    assert!(blob.contains(r#""videoRenderContexts":[]"#));
    assert!(blob.contains(r#""dataRenderContexts":null,"dataSourceContexts":null"#));
    assert!(!blob.contains("edgeToken") && !blob.contains("receiveUnmixedMeetingAudio"));
}

#[test]
fn extensions_are_written_only_when_set() {
    let mut spec = SessionSpec {
        edge_token: Some("s3cret".into()),
        ..seed_spec()
    };
    spec.audio.as_mut().unwrap().unmixed_meeting_audio = true;
    let blob = spec.build().unwrap().to_blob();
    let seed = seed_spec().build().unwrap().to_blob();
    assert_eq!(
        blob,
        format!(
            r#"{},"receiveUnmixedMeetingAudio":true,"edgeToken":"s3cret"}}"#,
            &seed[..seed.len() - 1]
        )
    );
}

#[test]
fn h264_receivers_list_their_sink_encoding() {
    let spec = SessionSpec {
        video: vec![
            VideoSocketSpec {
                receive_color_format: VideoColorFormat::H264,
                ..VideoSocketSpec::default()
            },
            VideoSocketSpec {
                receive_color_format: VideoColorFormat::H264,
                ..VideoSocketSpec::default()
            },
            VideoSocketSpec::default(),
        ],
        ..SessionSpec::default()
    };
    let config = spec.build().unwrap();
    assert_eq!(
        config.video_sink_encoding_formats.as_ref().unwrap(),
        &vec![serde_json::json!("H264")]
    );
}

#[test]
fn impossible_specs_are_refused_with_the_field() {
    let too_many = SessionSpec {
        video: vec![VideoSocketSpec::default(); MAX_VIDEO_SOCKETS + 1],
        ..SessionSpec::default()
    };
    assert!(matches!(
        too_many.build(),
        Err(BlobError::InvalidSpec { field: "video", .. })
    ));
    let render_on_sender = SessionSpec {
        audio: Some(AudioSocketSpec {
            direction: Direction::SendOnly,
            render_context: Some(Uuid::nil()),
            ..AudioSocketSpec::default()
        }),
        ..SessionSpec::default()
    };
    assert!(matches!(
        render_on_sender.build(),
        Err(BlobError::InvalidSpec {
            field: "audio.render_context",
            ..
        })
    ));
    let unmixed_sender = SessionSpec {
        audio: Some(AudioSocketSpec {
            direction: Direction::SendOnly,
            unmixed_meeting_audio: true,
            ..AudioSocketSpec::default()
        }),
        ..SessionSpec::default()
    };
    assert!(unmixed_sender.build().is_err());
    let empty_uri = SessionSpec {
        mp_uri: " ".into(),
        ..SessionSpec::default()
    };
    assert!(matches!(
        empty_uri.build(),
        Err(BlobError::InvalidSpec {
            field: "mp_uri",
            ..
        })
    ));
}

#[test]
fn unknown_audio_format_and_members_survive_a_round_trip() {
    let text = r#"{"mpUri":"quic://h:1/MediaProcessor","supportedAudioFormat":"Pcm44KStereo","futureKnob":{"a":[1,null]},"mpMediaSessionId":"x"}"#;
    let config = MediaSessionConfig::from_blob(text).unwrap();
    assert_eq!(
        config.supported_audio_format.as_ref(),
        Some(&AudioFormat::Other("Pcm44KStereo".into()))
    );
    let again: serde_json::Value = serde_json::from_str(&config.to_blob()).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    assert_eq!(AudioFormat::Pcm16K.frame_bytes(), Some(640));
    assert_eq!(AudioFormat::Pcm8K.frame_bytes(), Some(320));
}

#[test]
fn blobs_that_are_not_configurations_say_why_and_where() {
    let not_object = MediaSessionConfig::from_blob("42").unwrap_err();
    assert_eq!(
        not_object.to_string(),
        ".: not a media session configuration: expected a JSON object, found a number"
    );
    let no_uri = MediaSessionConfig::from_blob(r#"{"callId":"x"}"#).unwrap_err();
    assert!(no_uri.to_string().contains("no `mpUri`"), "{no_uri}");
    let wrong_type =
        MediaSessionConfig::from_blob(r#"{"mpUri":"u","audioRenderContexts":["a",7]}"#)
            .unwrap_err();
    assert_eq!(
        wrong_type,
        BlobError::Schema {
            path: "audioRenderContexts[1]".into(),
            message: "invalid type: integer `7`, expected a string".into()
        }
    );
    let truncated = MediaSessionConfig::from_blob(r#"{"mpUri":"u","#).unwrap_err();
    assert!(
        matches!(
            truncated,
            BlobError::Json {
                line: 1,
                column: 13,
                ..
            }
        ),
        "{truncated:?}"
    );
}

#[test]
fn media_config_wraps_the_blob_as_a_string() {
    let config = seed_spec().build().unwrap();
    let value = serde_json::to_value(config.to_media_config()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": config.to_blob()})
    );
}
