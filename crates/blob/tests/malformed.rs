//! Malformed input of every kind gives a typed error that names the place, never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use mediaproc_blob::{BlobError, MAX_DOCUMENT_BYTES, parse_document};

#[test]
fn every_truncation_of_every_vector_is_an_error_with_a_position() {
    for path in common::all_vectors() {
        let bytes = std::fs::read(&path).unwrap();
        let end = bytes.iter().rposition(|b| *b == b'}').unwrap();
        for cut in 0..end {
            match parse_document(&bytes[..cut]) {
                Err(BlobError::Json { line, column, .. }) => {
                    assert!(line >= 1 && column <= bytes.len())
                }
                other => panic!("{} cut at {cut}: {other:?}", path.display()),
            }
        }
    }
}

#[test]
fn wrong_types_name_the_json_path() {
    let cases = [
        (
            r##"{"@odata.type":"#microsoft.graph.call","targets":{}}"##,
            "targets",
        ),
        (
            r##"{"@odata.type":"#microsoft.graph.call","targets":[{"identity":{"user":{"id":5}}}]}"##,
            "targets[0].identity.user.id",
        ),
        (
            r##"{"@odata.type":"#microsoft.graph.call","requestedModalities":"audio"}"##,
            "requestedModalities",
        ),
        (
            r##"{"@odata.type":"#microsoft.graph.participant","mediaStreams":[{"serverMuted":"no"}]}"##,
            "mediaStreams[0].serverMuted",
        ),
        (
            r##"{"@odata.type":"#microsoft.graph.commsNotifications","value":[{"changeType":1}]}"##,
            "value[0].changeType",
        ),
        (r##"{"mpUri":"x","callId":[]}"##, "callId"),
    ];
    for (text, expected_path) in cases {
        match parse_document(text.as_bytes()) {
            Err(BlobError::Schema { path, .. }) => assert_eq!(path, expected_path, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn a_blob_that_is_a_number_or_not_json() {
    let err =
        parse_document(br##"{"@odata.type":"#microsoft.graph.appHostedMediaConfig","blob":12}"##)
            .unwrap_err();
    assert!(
        matches!(&err, BlobError::Schema { path, .. } if path == "blob"),
        "{err:?}"
    );
    let err = parse_document(b"12").unwrap_err();
    assert!(matches!(err, BlobError::UnknownDocument { .. }), "{err:?}");
    let err = parse_document(br#""{not json""#).unwrap_err();
    assert!(
        matches!(err, BlobError::NotAMediaSessionConfig { .. }),
        "{err:?}"
    );
}

#[test]
fn ten_megabytes_of_nesting_is_refused_at_the_depth_limit() {
    let depth = 5 * 1024 * 1024;
    let mut text = "[".repeat(depth);
    text.push_str(&"]".repeat(depth));
    match parse_document(text.as_bytes()) {
        Err(BlobError::Json {
            line: 1,
            column,
            message,
        }) => {
            assert!(column <= 129, "{column}");
            assert!(message.contains("recursion limit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_names_the_byte_offset() {
    let mut bytes = br#"{"mpUri":"a"#.to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(br#""}"#);
    assert_eq!(
        parse_document(&bytes).unwrap_err(),
        BlobError::InvalidUtf8 { offset: 11 }
    );
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let bytes = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(
        parse_document(&bytes),
        Err(BlobError::TooLarge { .. })
    ));
}

#[test]
fn unknown_odata_types_and_shapes_are_unrecognised_not_panics() {
    for text in [
        r#"{}"#,
        r#"[]"#,
        "null",
        "true",
        r##"{"@odata.type":"#microsoft.graph.user"}"##,
        r#"{"@odata.type":7}"#,
    ] {
        assert!(parse_document(text.as_bytes()).is_err(), "{text}");
    }
}
