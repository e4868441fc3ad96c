//! The wire protocol (contract §2), sans I/O: typed frames, a pure decoder that validates
//! shape and limits, and the encoder for server frames. The connection loop in
//! `gateway::session` only moves bytes and calls into here.

pub mod codes;
pub mod decode;
pub mod frames;
pub mod limits;

pub use codes::{CloseCode, ErrorCode};
pub use decode::{decode_text, DecodeError, Decoded};
pub use frames::{ClientFrame, ServerFrame};
pub use limits::ValueLimits;
