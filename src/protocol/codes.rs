//! Error codes (sent in `error` frames) and WebSocket close codes: the one place where
//! protocol failures get their wire names and numbers (contract §2).

use serde::Serialize;

/// The `code` of an `error` frame. The session stays open after any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Text that does not parse as JSON (also text that is not valid UTF-8).
    InvalidJson,
    /// A JSON object whose `type` names no known frame.
    UnknownType,
    /// Valid JSON of the wrong shape; also binary frames.
    InvalidFrame,
    /// A value inside a frame over a limit (properties, depth, string length).
    TooLarge,
    /// Over the per-session frame rate.
    RateLimited,
    /// `identify` touched an attribute that is not client-writable.
    ForbiddenAttribute,
    /// `engage` named a delivery that is not this user's.
    UnknownDelivery,
    /// Extension: the store could not make the frame durable; resend it later.
    Unavailable,
}

impl ErrorCode {
    /// The wire name, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ForbiddenAttribute => "forbidden_attribute",
            ErrorCode::UnknownDelivery => "unknown_delivery",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// WebSocket close codes used by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (e.g. the session was resumed on another connection).
    Normal,
    /// 1001: the node is draining; reconnect (elsewhere) and resume.
    GoingAway,
    /// 1007: a text frame that is not valid UTF-8 (RFC 6455 §8.1 requires failing the
    /// connection; the WebSocket layer cannot resume reading after it).
    InvalidPayload,
    /// 1009: a frame over the frame-size limit.
    TooBig,
    /// 4000: protocol violation: no, late or invalid hello; heartbeat timeout.
    Protocol,
    /// 4001: token invalid (bad signature, wrong algorithm, no `sub`, user changed).
    Unauthorized,
    /// 4002: token expired; refresh it and reconnect (or send `auth` before `exp`).
    TokenExpired,
    /// 4008: sustained flood over the rate limit.
    RateLimited,
    /// 4009: too many sessions for this user.
    TooManySessions,
    /// 4010 (extension): the session's outbox overflowed; reconnect and resume.
    SlowConsumer,
}

impl CloseCode {
    /// The numeric close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::InvalidPayload => 1007,
            CloseCode::TooBig => 1009,
            CloseCode::Protocol => 4000,
            CloseCode::Unauthorized => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::RateLimited => 4008,
            CloseCode::TooManySessions => 4009,
            CloseCode::SlowConsumer => 4010,
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "1000",
            CloseCode::GoingAway => "1001",
            CloseCode::InvalidPayload => "1007",
            CloseCode::TooBig => "1009",
            CloseCode::Protocol => "4000",
            CloseCode::Unauthorized => "4001",
            CloseCode::TokenExpired => "4002",
            CloseCode::RateLimited => "4008",
            CloseCode::TooManySessions => "4009",
            CloseCode::SlowConsumer => "4010",
        }
    }
}
