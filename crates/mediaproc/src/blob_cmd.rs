//! `mediaproc blob`.

use mediaproc_blob::{
    AudioFormat, AudioSocketSpec, Direction, SessionSpec, VideoColorFormat, VideoSocketSpec,
};

use crate::{BlobArgs, Failure, output};

pub fn run(args: &BlobArgs) -> Result<(), Failure> {
    let spec = spec_from_args(args)?;
    let config = spec
        .build()
        .map_err(|err| Failure::usage(err.to_string()))?;
    let text = if args.media_config {
        let media = config.to_media_config();
        let rendered = if args.pretty {
            serde_json::to_string_pretty(&media)
        } else {
            serde_json::to_string(&media)
        };
        rendered
            .map_err(|err| Failure::invalid(format!("cannot serialize the media config: {err}")))?
    } else if args.pretty {
        config.to_blob_pretty()
    } else {
        config.to_blob()
    };
    output::line(&text);
    Ok(())
}

fn parse_direction(flag: &str, text: &str) -> Result<Direction, Failure> {
    text.parse().map_err(|_| {
        Failure::usage(format!(
            "--{flag}: `{text}` is not one of {}",
            Direction::NAMES.join(", ")
        ))
    })
}

pub fn spec_from_args(args: &BlobArgs) -> Result<SessionSpec, Failure> {
    let audio = if args.audio == "none" {
        if args.audio_render_context.is_some()
            || args.audio_source_context.is_some()
            || args.unmixed
        {
            return Err(Failure::usage(
                "--audio none leaves no audio socket for the audio flags given",
            ));
        }
        None
    } else {
        let format = AudioFormat::from_text(&args.audio_format);
        if !format.is_known() {
            output::error_line(&format!(
                "warning: --audio-format `{}` is not one mediaproc knows ({}); written as given",
                args.audio_format,
                AudioFormat::KNOWN.join(", ")
            ));
        }
        Some(AudioSocketSpec {
            direction: parse_direction("audio", &args.audio)?,
            format,
            unmixed_meeting_audio: args.unmixed,
            render_context: args.audio_render_context,
            source_context: args.audio_source_context,
        })
    };
    let video_direction = parse_direction("video-direction", &args.video_direction)?;
    let receive_color_format = match args.video_format.to_ascii_lowercase().as_str() {
        "nv12" => VideoColorFormat::Nv12,
        "h264" => VideoColorFormat::H264,
        other => {
            return Err(Failure::usage(format!(
                "--video-format: `{other}` is not nv12 or h264"
            )));
        }
    };
    let video = (0..args.video)
        .map(|_| VideoSocketSpec {
            direction: video_direction,
            receive_color_format,
            ..VideoSocketSpec::default()
        })
        .collect();
    Ok(SessionSpec {
        mp_uri: args.mp_uri.clone(),
        audio,
        video,
        vbss: args.vbss,
        data: args.data,
        session_id: args.session_id,
        call_id: args.call_id,
        edge_token: args.edge_token.clone(),
        ..SessionSpec::default()
    })
}
