//! Typed client and server frames (contract §2).

use serde::Serialize;
use serde_json::{Map, Value};

use super::codes::ErrorCode;

/// `resume` inside `hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The earlier session id.
    pub session: String,
    /// Highest delivery `seq` the client received (0 = none).
    pub last_seq: u64,
}

/// Session page context (`hello.page`, `page` frames).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PageContext {
    /// Path, e.g. `/setup`.
    pub path: String,
    /// Document title.
    pub title: Option<String>,
    /// Referrer.
    pub referrer: Option<String>,
}

/// A validated client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Opening frame.
    Hello {
        /// The JWT.
        token: String,
        /// Continue an earlier session.
        resume: Option<Resume>,
        /// Current page.
        page: Option<PageContext>,
        /// SDK name/version.
        sdk: Option<String>,
    },
    /// A behaviour event.
    Track {
        /// Client-chosen dedup id.
        id: Option<String>,
        /// Event name.
        event: String,
        /// Event properties.
        properties: Map<String, Value>,
    },
    /// `$page_view`; also sets the session's page.
    Page {
        /// Client-chosen dedup id.
        id: Option<String>,
        /// The page.
        page: PageContext,
    },
    /// Client-writable attributes.
    Identify {
        /// Client-chosen dedup id.
        id: Option<String>,
        /// Attributes (null removes).
        attributes: Map<String, Value>,
    },
    /// The user is interacting.
    Activity {
        /// Optional id, answered by `ok`.
        id: Option<String>,
    },
    /// Every delivery up to `seq` was received.
    Ack {
        /// Optional id, answered by `ok`.
        id: Option<String>,
        /// Highest received seq.
        seq: u64,
    },
    /// Engagement with a delivery.
    Engage {
        /// Optional id, answered by `ok`.
        id: Option<String>,
        /// Delivery id.
        delivery: String,
        /// What happened.
        action: EngageAction,
        /// Button id for clicks.
        button: Option<String>,
    },
    /// Token refresh.
    Auth {
        /// Optional id, answered by `ok`.
        id: Option<String>,
        /// The new JWT.
        token: String,
    },
}

impl ClientFrame {
    /// The frame's `type`, also a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Track { .. } => "track",
            ClientFrame::Page { .. } => "page",
            ClientFrame::Identify { .. } => "identify",
            ClientFrame::Activity { .. } => "activity",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::Engage { .. } => "engage",
            ClientFrame::Auth { .. } => "auth",
        }
    }

    /// The client's `id`, when the frame carries one.
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientFrame::Hello { .. } => None,
            ClientFrame::Track { id, .. }
            | ClientFrame::Page { id, .. }
            | ClientFrame::Identify { id, .. }
            | ClientFrame::Activity { id }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::Engage { id, .. }
            | ClientFrame::Auth { id, .. } => id.as_deref(),
        }
    }
}

/// `engage.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngageAction {
    /// The message became visible.
    Impression,
    /// A button was clicked.
    Click,
    /// The message was dismissed.
    Dismiss,
}

impl EngageAction {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EngageAction::Impression => "impression",
            EngageAction::Click => "click",
            EngageAction::Dismiss => "dismiss",
        }
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Reply to `hello`.
    Welcome {
        /// Session id.
        session: String,
        /// User id (`sub`).
        user: String,
        /// Whether `resume` was honoured.
        resumed: bool,
        /// Server ping interval.
        heartbeat_ms: u64,
        /// Server wall time, RFC 3339.
        server_time: String,
    },
    /// These ids are durably recorded.
    Ok {
        /// Client ids.
        ids: Vec<String>,
    },
    /// A frame was rejected; the session stays open.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
        /// The rejected frame's id, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Remove a delivery.
    Revoke {
        /// Delivery id.
        delivery: String,
    },
}

impl ServerFrame {
    /// The frame's `type`, also a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Welcome { .. } => "welcome",
            ServerFrame::Ok { .. } => "ok",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Revoke { .. } => "revoke",
        }
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A `message` frame (a delivery), serialized once when its `seq` is assigned.
#[derive(Debug, Clone, Serialize)]
pub struct MessageFrame<'a> {
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Per-session sequence number.
    pub seq: u64,
    /// Cluster-unique delivery id.
    pub delivery: &'a str,
    /// Campaign id.
    pub campaign: &'a str,
    /// Variant id.
    pub variant: &'a str,
    /// The rendered message.
    pub message: &'a Value,
    /// When the delivery expires, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}
