//! API errors: one enum, mapped to status codes and the contract's JSON error body
//! `{"error":{"code","message","path"}}` in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Offending field, when there is one.
    pub path: Option<String>,
}

impl ApiError {
    /// 400 with a path.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
            path: Some(path.into()),
        }
    }

    /// 400 for a body that is not JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_json",
            message: message.into(),
            path: None,
        }
    }

    /// 400 for a value over a limit.
    pub fn too_large(path: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "too_large",
            message: message.into(),
            path: Some(path.into()),
        }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            path: None,
        }
    }

    /// 405: the route exists, not with this method.
    pub fn method_not_allowed() -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "this route does not take that method".into(),
            path: None,
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            path: None,
        }
    }

    /// 413.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!("request body over {limit} bytes"),
            path: None,
        }
    }

    /// 503: the store could not make the request durable; retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            path: None,
        }
    }

    /// The `error` object of the response body: `{"code", "message", "path"?}`.
    pub fn body(&self) -> serde_json::Value {
        // `path` is always there (contract §3's shape), null when no field is at fault.
        json!({"code": self.code, "message": self.message, "path": self.path})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.body();
        (self.status, axum::Json(json!({ "error": err }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error answering an API call");
        ApiError::unavailable("storage unavailable; retry")
    }
}
