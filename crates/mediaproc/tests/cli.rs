//! The CLI's acceptance checks, run against the built binary.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/graph")
}

fn mediaproc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mediaproc"))
        .args(args)
        .output()
        .unwrap()
}

fn mediaproc_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mediaproc"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may exit before reading everything (an oversized input); a broken pipe is expected then.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn json_file(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(vectors().join(name)).unwrap()).unwrap()
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn blob_with_the_seed_ids_prints_the_seed_blob_byte_for_byte() {
    let output = mediaproc(&[
        "blob",
        "--mp-uri",
        "net.tcp://bot.contoso.com:18732/MediaProcessor",
        "--audio-render-context",
        "14778cc4-f54c-43c7-989f-9092e34ef784",
        "--audio-source-context",
        "a5dcfc9b-5a54-48ef-86f5-1fdd8508741a",
        "--session-id",
        "2379cf46-acf3-4fef-a914-be9627075320",
        "--call-id",
        "1b69b141-7f1a-4033-9c34-202737190a20",
    ]);
    assert!(output.status.success());
    let expected =
        std::fs::read_to_string(vectors().join("media-session-config.blob.txt")).unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{}\n", expected.trim_end())
    );
}

#[test]
fn blob_media_config_wraps_the_blob() {
    let output = mediaproc(&[
        "blob",
        "--media-config",
        "--video",
        "2",
        "--data",
        "--unmixed",
    ]);
    let value = stdout_json(&output);
    assert_eq!(
        value["@odata.type"],
        "#microsoft.graph.appHostedMediaConfig"
    );
    let blob: serde_json::Value = serde_json::from_str(value["blob"].as_str().unwrap()).unwrap();
    assert_eq!(blob["videoRenderContexts"].as_array().unwrap().len(), 2);
    assert_eq!(blob["dataSourceContexts"].as_array().unwrap().len(), 1);
    assert_eq!(blob["receiveUnmixedMeetingAudio"], true);
}

#[test]
fn blob_usage_errors_exit_2() {
    for args in [
        &["blob", "--video", "11"][..],
        &["blob", "--audio", "sideways"],
        &["blob", "--session-id", "not-a-uuid"],
        &[
            "blob",
            "--audio",
            "sendonly",
            "--audio-render-context",
            "14778cc4-f54c-43c7-989f-9092e34ef784",
        ],
    ] {
        let output = mediaproc(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

const CALLBACK: &str = "https://bot.contoso.com/callback";
const TENANT: &str = "aa67bd4c-8475-432d-bd41-39f255720e0a";
const ORGANIZER: &str = "5810cede-f3cc-42eb-b2c1-e9bd5d53ec96:Bob";
const JOHN: &str = "112f7296-5fa4-42ca-bae8-6a692b15d4b8:John";
const SCHEDULED: &str = "19:meeting_Win6Ydo4wsMijFjZS00ZGVjLTk5MGUtOTRjNWY2NmNkYTFm@thread.v2";
const CHANNEL: &str = "19:cbee7c1c860e465f8258e3cebf7bee0d@thread.skype";
const BEEP: &str = "https://cdn.contoso.com/beep.wav=f8971b04-b53e-418c-9222-c82ce681a582";
const COOL: &str = "https://cdn.contoso.com/cool.wav=86dc814b-c172-4428-9112-60f8ecae1edb";

/// (vector, flags, permissions) for every request of the seed.
fn seed_requests(placeholder: &str) -> Vec<(&'static str, Vec<String>, Vec<&'static str>)> {
    let prompts = ["--prefetch", BEEP, "--prefetch", COOL];
    let meeting = |thread: &str, message: Option<&str>| {
        let mut flags = vec![
            "--thread-id",
            thread,
            "--organizer",
            ORGANIZER,
            "--tenant",
            TENANT,
        ];
        if let Some(message) = message {
            flags.extend(["--message-id", message]);
        }
        flags.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let strings = |flags: &[&str]| flags.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "p2p-service-hosted.request.json",
            strings(&[
                "--scenario",
                "p2p",
                "--media",
                "service",
                "--target-user",
                JOHN,
            ]),
            vec!["Calls.Initiate.All"],
        ),
        (
            "p2p-app-hosted.request.json",
            strings(&[
                "--scenario",
                "p2p",
                "--media",
                "app",
                "--blob",
                placeholder,
                "--target-user",
                JOHN,
            ]),
            vec!["Calls.Initiate.All", "Calls.AccessMedia.All"],
        ),
        (
            "scheduled-meeting-service-hosted.request.json",
            [
                strings(&["--scenario", "scheduled-meeting", "--media", "service"]),
                strings(&prompts),
                meeting(SCHEDULED, None),
            ]
            .concat(),
            vec!["Calls.JoinGroupCalls.All"],
        ),
        (
            "scheduled-meeting-app-hosted.request.json",
            [
                strings(&[
                    "--scenario",
                    "scheduled-meeting",
                    "--media",
                    "app",
                    "--blob",
                    placeholder,
                ]),
                meeting(SCHEDULED, None),
            ]
            .concat(),
            vec!["Calls.JoinGroupCalls.All", "Calls.AccessMedia.All"],
        ),
        (
            "channel-meeting-service-hosted.request.json",
            [
                strings(&["--scenario", "channel-meeting", "--media", "service"]),
                strings(&prompts),
                meeting(CHANNEL, Some("1533758867081")),
            ]
            .concat(),
            vec!["Calls.JoinGroupCalls.All"],
        ),
        (
            "guest-join-service-hosted.request.json",
            [
                strings(&[
                    "--scenario",
                    "guest-join",
                    "--media",
                    "service",
                    "--guest",
                    "d7a3b999-17ac-4bca-9e77-e6a730d2ec2e:Guest User",
                ]),
                strings(&prompts),
                meeting(CHANNEL, Some("1533758867081")),
            ]
            .concat(),
            vec!["Calls.JoinGroupCallsAsGuest.All"],
        ),
    ]
}

#[test]
fn call_body_reproduces_each_seed_request_and_its_permissions() {
    let dir = tempdir();
    let placeholder = dir.join("placeholder.txt");
    std::fs::write(&placeholder, "<Media Session Configuration>\n").unwrap();
    for (name, flags, permissions) in seed_requests(placeholder.to_str().unwrap()) {
        let mut args = vec!["call-body", "--callback", CALLBACK];
        args.extend(flags.iter().map(String::as_str));
        assert_eq!(stdout_json(&mediaproc(&args)), json_file(name), "{name}");
        args.push("--permissions");
        let output = mediaproc(&args);
        assert!(output.status.success());
        let lines: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines, permissions, "{name}");
    }
}

#[test]
fn call_body_with_a_generated_or_given_blob_is_a_valid_app_hosted_request() {
    let dir = tempdir();
    let blob_file = dir.join("blob.json");
    let blob = mediaproc(&[
        "blob",
        "--session-id",
        "2379cf46-acf3-4fef-a914-be9627075320",
    ]);
    std::fs::write(&blob_file, &blob.stdout).unwrap();
    let body = stdout_json(&mediaproc(&[
        "call-body",
        "--scenario",
        "p2p",
        "--media",
        "app",
        "--callback",
        CALLBACK,
        "--target-user",
        JOHN,
        "--blob",
        blob_file.to_str().unwrap(),
    ]));
    let blob_text = body["mediaConfig"]["blob"].as_str().unwrap();
    assert_eq!(
        blob_text,
        String::from_utf8(blob.stdout).unwrap().trim_end()
    );
    // And the body passes inspect.
    let output = mediaproc_stdin(
        &["inspect"],
        serde_json::to_string(&body).unwrap().as_bytes(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("scenario     p2p"), "{summary}");
    assert!(
        summary.contains("2379cf46-acf3-4fef-a914-be9627075320"),
        "{summary}"
    );
}

#[test]
fn call_body_missing_scenario_flags_is_a_usage_error() {
    for args in [
        &[
            "call-body",
            "--scenario",
            "p2p",
            "--media",
            "app",
            "--callback",
            CALLBACK,
        ][..],
        &[
            "call-body",
            "--scenario",
            "guest-join",
            "--media",
            "service",
            "--callback",
            CALLBACK,
            "--thread-id",
            "t",
        ],
        &[
            "call-body",
            "--scenario",
            "lunch",
            "--media",
            "service",
            "--callback",
            CALLBACK,
        ],
    ] {
        let output = mediaproc(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    let output = mediaproc(&[
        "call-body",
        "--scenario",
        "p2p",
        "--media",
        "service",
        "--callback",
        "http://x.example/cb",
        "--target-user",
        "u",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("callbackUri: must be an https URL"));
}

#[test]
fn inspect_json_round_trips_every_vector() {
    let mut count = 0;
    for entry in walk(&vectors()) {
        let output = mediaproc(&["inspect", "--json", entry.to_str().unwrap()]);
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&entry).unwrap()).unwrap();
        assert_eq!(stdout_json(&output), original, "{}", entry.display());
        count += 1;
    }
    assert!(count >= 15);
}

#[test]
fn inspect_summarises_a_roster() {
    let output = mediaproc(&[
        "inspect",
        vectors()
            .join("scheduled-meeting.notification-roster.json")
            .to_str()
            .unwrap(),
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("commsNotifications (1 notification)"),
        "{text}"
    );
    assert!(
        text.contains("videoBasedScreenSharing sourceId 8 receiveOnly"),
        "{text}"
    );
    assert!(text.contains("[muted]"), "{text}");
}

#[test]
fn malformed_input_exits_1_with_a_one_line_reason_naming_the_place() {
    let deep = format!("{}{}", "[".repeat(5_000_000), "]".repeat(5_000_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            br##"{"@odata.type": "#microsoft.graph.call", "targets": ["##.to_vec(),
            "line 1, column",
        ),
        (
            br##"{"@odata.type": "#microsoft.graph.call", "targets": {}}"##.to_vec(),
            "targets:",
        ),
        (
            br##"{"@odata.type":"#microsoft.graph.appHostedMediaConfig","blob":"42"}"##.to_vec(),
            "blob",
        ),
        (b"42".to_vec(), "expected a JSON object"),
        (deep.into_bytes(), "recursion limit"),
        (vec![b'{', b'"', 0xc3, 0x28, b'"'], "byte offset 2"),
    ];
    for (input, expected) in cases {
        let output = mediaproc_stdin(&["inspect"], &input);
        assert_eq!(output.status.code(), Some(1), "{expected}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(expected),
            "{stderr} should mention {expected}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = mediaproc(&["inspect", "/nonexistent/file.json"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn inspect_usage_error_exits_2() {
    assert_eq!(
        mediaproc(&["inspect", "--frobnicate"]).status.code(),
        Some(2)
    );
    assert_eq!(mediaproc(&["nonsense"]).status.code(), Some(2));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mediaproc-cli-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
