//! The fleet's one error type.

/// What can go wrong in the fleet layer. Every variant is something a caller can act on: retry later, refuse with
/// 503, or report a configuration mistake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The registry (Redis) could not be reached or answered with an error.
    #[error("fleet registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered something this version does not understand (a node record it cannot read).
    #[error("fleet registry answered something unexpected: {0}")]
    Protocol(String),
    /// The fleet configuration makes no sense (a bad URL, an empty node id).
    #[error("fleet configuration: {0}")]
    Config(String),
}

impl From<redis::RedisError> for FleetError {
    fn from(err: redis::RedisError) -> Self {
        FleetError::Unreachable(err.to_string())
    }
}
