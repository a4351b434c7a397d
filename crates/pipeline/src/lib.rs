//! mediaproc pipeline (docs to come)
pub mod codec;
pub mod error;
pub mod frame;
pub mod jitter;
pub mod mixer;
pub mod pacer;
pub mod resample;
pub mod ring;
pub mod session;
pub use codec::*;
pub use error::{Error, Result};
pub use frame::*;
pub use jitter::*;
pub use mixer::*;
pub use pacer::*;
pub use resample::*;
pub use ring::*;
pub use session::*;
