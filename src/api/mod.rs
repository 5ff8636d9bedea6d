//! The HTTP API (kind `api`, the `api` child of the root): a task child
//! serving the Clash/mihomo REST subset that dashboards (yacd, metacubexd)
//! speak, and ward's own routes for what Clash has no word for (the same
//! operations and JSON as the admin socket, see `admin::operations`).
//!
//! - [`server`]: the child, its accept loop, auth, CORS and limits.
//! - [`clash`]: `/version`, `/configs`, `/proxies`, `/group`, `/rules`, providers.
//! - [`connections`]: `/connections`, one per live UDP flow.
//! - [`own`]: `/tree`, `/dialers`, `/dns`, `/reload`.
//! - [`live`]: the streams `/traffic`, `/memory`, `/logs`; `/connections`
//!   and `/tree` stream too when asked for a WebSocket.
//! - [`stream`]: how a stream goes out (chunked or WebSocket), its cap.
//! - [`write_deadline`]: a connection whose blocked writes time out.
//! - [`page`]: the web page at `/ui/`, served without the secret.
//! - [`picks`]: the groups' picks, kept in a state file across restarts.

pub mod clash;
pub mod connections;
pub mod live;
pub mod own;
pub mod page;
pub mod picks;
pub mod server;
pub mod stream;
pub mod write_deadline;

pub use server::{child_spec, ApiArgs};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// mihomo's error body: `{"message": ...}` with a status.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// Milliseconds since the Unix epoch as RFC 3339, as Go's `time.Time`
/// marshals (UTC here).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
