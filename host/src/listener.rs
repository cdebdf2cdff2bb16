//! The HTTP listener of `corral serve`: HTTP/1.1 on hyper, with the bounds a server on
//! an open network needs and axum's own `serve` does not set.
//!
//! - **Header read timeout**, which is also the **idle keep-alive timeout**: a client
//!   has `header_timeout` to send a request's whole header, counted from when the
//!   connection is ready for it (so a connection that sends nothing, or one header byte
//!   a second, is closed).
//! - **Header size**: the whole header (request line and fields) must fit in
//!   `max_header_bytes`, else the connection is closed with `431`.
//! - Bodies are bounded by the routes (size) and by a per-chunk read timeout layered in
//!   [`crate::api::router`]; the request timeout bounds the rest.
//! - **Graceful shutdown**: stop accepting, let open connections finish their requests
//!   within the grace period, then close what is left.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Time to send a whole request header, and the most a connection may sit idle.
    pub header_timeout: Duration,
    /// Largest request header, in bytes (at least 8 KiB: hyper's floor).
    pub max_header_bytes: usize,
    /// On shutdown, how long open connections may take to finish.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully.
/// Returns once every connection is closed (finished, or cut at the grace period).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    // hyper's own HTTP/1 builder, not hyper-util's `auto` one: that first waits for
    // bytes to tell HTTP/1 from HTTP/2, with no timeout, so a silent connection would
    // stay open for ever.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = tower::ServiceExt::map_request(
                    app.clone(),
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                        request
                    },
                );
                let connection = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
        }
    }
    // Whatever is left is cut, so every handle the connections held is dropped.
    connections.shutdown().await;
}
