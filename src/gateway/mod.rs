//! The network edge: the TCP accept loop (connection limit, file-descriptor exhaustion
//! handled without spinning), HTTP/1 serving with upgrades, the WebSocket handshake, and
//! live sessions (`registry`, `session`).

pub mod ratelimit;
pub mod registry;
pub mod session;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::app::App;

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24): process limit; ENFILE (23): system limit; ENOBUFS/ENOMEM too.
    matches!(e.raw_os_error(), Some(23) | Some(24) | Some(105) | Some(12))
}

/// Accepts connections until shutdown. Each connection takes a permit; with none left
/// the connection is answered 503 and closed. When accept() fails for lack of file
/// descriptors, a reserved descriptor is released to accept-and-close the waiting
/// connection (so clients see a clean refusal, not a hang) and the loop backs off.
pub async fn accept_loop(app: Arc<App>, listener: TcpListener, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let router = crate::http::router(app.clone());
    let mut reserve = std::fs::File::open("/dev/null").ok();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(5);
                if reserve.is_none() {
                    reserve = std::fs::File::open("/dev/null").ok();
                }
                let _ = stream.set_nodelay(true);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let slot = Arc::new(ConnSlot::new(permit, &app));
                        app.tracker.spawn(crate::http::serve_connection(
                            app.clone(),
                            router.clone(),
                            stream,
                            slot,
                        ));
                    }
                    Err(_) => {
                        app.metrics.connections_refused.inc();
                        app.tracker.spawn(refuse(stream));
                    }
                }
            }
            Err(e) if is_fd_exhaustion(&e) => {
                app.metrics.accept_errors.inc();
                tracing::warn!(error = %e, "out of file descriptors; refusing connections");
                // Free one descriptor and use it to accept-and-close what is waiting, so
                // those clients see a prompt close instead of hanging in the backlog.
                drop(reserve.take());
                for _ in 0..1024 {
                    match tokio::time::timeout(Duration::from_millis(1), listener.accept()).await {
                        Ok(Ok((stream, _))) => {
                            app.metrics.connections_refused.inc();
                            drop(stream);
                        }
                        _ => break,
                    }
                }
                reserve = std::fs::File::open("/dev/null").ok();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                // ECONNABORTED and friends: the peer gave up; carry on.
                app.metrics.accept_errors.inc();
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// One admitted TCP connection: holds its `max_connections` permit and keeps the
/// connection gauge right. An upgraded WebSocket carries it into its session task.
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ConnSlot {
    fn new(permit: OwnedSemaphorePermit, app: &App) -> Self {
        app.metrics.connections.inc();
        ConnSlot {
            _permit: permit,
            metrics: app.metrics.clone(),
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read (and discard) the request first, so clients see a response, not a reset.
    let mut buf = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    let body = r#"{"error":{"code":"unavailable","message":"connection limit reached; retry later","path":null}}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// The WebSocket settings: small buffers for many idle sessions, frame-size cap.
pub fn ws_config(app: &App) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = app.cfg.session.read_buffer_bytes;
    c.write_buffer_size = app.cfg.session.write_buffer_bytes;
    c.max_write_buffer_size =
        app.cfg.limits.max_frame_bytes * 4 + app.cfg.session.write_buffer_bytes + 1;
    c.max_message_size = Some(app.cfg.limits.max_frame_bytes);
    c.max_frame_size = Some(app.cfg.limits.max_frame_bytes);
    c
}

/// Runs a session on an upgraded HTTP connection.
pub async fn run_upgraded(app: Arc<App>, upgraded: hyper::upgrade::Upgraded) {
    let mut ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(ws_config(&app)),
    )
    .await;
    session::serve(&app, &mut ws).await;
}
