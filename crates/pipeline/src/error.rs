//! The crate's one error type.

/// Everything that can go wrong in the pipeline. Messages say what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sample rate that cannot carry whole 20 ms frames or is outside 8–48 kHz.
    #[error(
        "unsupported sample rate {hz} Hz for {context}: expected a multiple of 50 Hz between 8000 and 48000"
    )]
    UnsupportedSampleRate {
        /// The rate that was asked for.
        hz: u32,
        /// Which component rejected it.
        context: &'static str,
    },
    /// A frame whose sample count is not 20 ms at the stream's rate.
    #[error("{context}: frame has {got} samples, expected {expected} (20 ms at {rate_hz} Hz)")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// Samples expected.
        expected: usize,
        /// The stream's rate.
        rate_hz: u32,
        /// Which operation rejected it.
        context: &'static str,
    },
    /// The outbound queue (bot to call) is full: backpressure, the bot must wait and retry.
    #[error("outbound queue full ({capacity_frames} frames queued): wait for the call to drain it")]
    OutboundFull {
        /// The queue's capacity in frames.
        capacity_frames: usize,
    },
    /// A mark name longer than [`crate::MAX_MARK_NAME_LEN`] bytes.
    #[error("mark name is {len} bytes long; at most {max} bytes are allowed")]
    MarkNameTooLong {
        /// Length of the rejected name.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many marks pending at once.
    #[error("{max} marks are already pending; wait until some are reported")]
    MarksFull {
        /// The limit ([`crate::MARKS_CAPACITY`]).
        max: usize,
    },
    /// A payload larger than the jitter buffer's slot.
    #[error("RTP payload of {len} bytes exceeds the {max}-byte limit for one 20 ms Opus packet")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit ([`crate::MAX_PAYLOAD`]).
        max: usize,
    },
    /// libopus refused an operation.
    #[error("Opus {operation} failed: {message} (libopus error {code})")]
    Opus {
        /// What was attempted (e.g. "decode", "encoder setup").
        operation: &'static str,
        /// The libopus error code (`OPUS_BAD_ARG`, `OPUS_INVALID_PACKET`, ...).
        code: i32,
        /// libopus's text for it.
        message: &'static str,
    },
    /// rubato refused an operation.
    #[error("resampler {operation} failed: {message}")]
    Resampler {
        /// What was attempted.
        operation: &'static str,
        /// rubato's message.
        message: String,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {field} {problem}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
