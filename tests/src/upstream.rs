//! [`Upstream`]: a real HTTP server on 127.0.0.1 for the outbound-HTTP tests, which
//! records every request it receives.
//!
//! | route | answer |
//! |---|---|
//! | `GET /hello` | `200`, [`HELLO`] |
//! | `GET /bytes/{n}` | `200`, `n` bytes of `x` |
//! | `GET /redirect?to=URL` | `302` to `URL` |
//! | `POST /echo` | `200`, the request body |
//! | `GET /silent` | nothing, ever: the connection stays open with no response |
//! | `GET /stall` | `200` and the first 5 bytes of the body (`first`), then nothing, ever |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The body of `GET /hello`.
pub const HELLO: &str = "hello from upstream";

type Hits = Arc<Mutex<Vec<String>>>;

/// What the server received: each request's line, and the `traceparent` of each
/// request that carried one.
#[derive(Clone, Default)]
struct Log {
    hits: Hits,
    traceparents: Hits,
}

/// A running test server. It stops when the runtime it was started on ends.
pub struct Upstream {
    addr: SocketAddr,
    hits: Hits,
    traceparents: Hits,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Starts a server on the current tokio runtime.
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let log = Log::default();
        let app = router(log.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream {
            addr,
            hits: log.hits,
            traceparents: log.traceparents,
            _runtime: None,
        }
    }

    /// Starts a server on a runtime of its own, for tests that are not async.
    pub fn start_in_background() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("upstream runtime");
        let upstream = runtime.block_on(Upstream::start());
        Upstream {
            _runtime: Some(runtime),
            ..upstream
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The rule that allows this server: `http://127.0.0.1:<port>`.
    pub fn rule(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `METHOD /path?query` of every request received so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().expect("hits").clone()
    }

    /// The `traceparent` header of every request that carried one, in order.
    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents.lock().expect("traceparents").clone()
    }
}

fn router(log: Log) -> Router {
    Router::new()
        .route("/hello", get(|| async { HELLO }))
        .route(
            "/bytes/{n}",
            get(|Path(n): Path<usize>| async move { "x".repeat(n) }),
        )
        .route("/redirect", get(redirect))
        .route("/echo", post(|body: String| async move { body }))
        .route("/silent", get(std::future::pending::<()>))
        .route("/stall", get(stall))
        .layer(middleware::from_fn_with_state(log, record))
}

async fn redirect(Query(query): Query<HashMap<String, String>>) -> Response {
    match query.get("to") {
        Some(to) => (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn stall() -> axum::body::Body {
    use futures::StreamExt;
    let first = futures::stream::iter([Ok::<_, std::io::Error>("first")]);
    axum::body::Body::from_stream(first.chain(futures::stream::pending()))
}

async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    log.hits
        .lock()
        .expect("hits")
        .push(format!("{} {path}", request.method()));
    if let Some(traceparent) = request.headers().get("traceparent") {
        log.traceparents
            .lock()
            .expect("traceparents")
            .push(traceparent.to_str().unwrap_or_default().to_string());
    }
    next.run(request).await
}
