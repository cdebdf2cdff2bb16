//! Sending one checked request to checked addresses: the equivalent of
//! wasmtime-wasi-http's `default_send_request`, except that it connects to the
//! addresses it is handed rather than resolving the host again, so nothing can change
//! between the check and the connection (no DNS-rebinding window). TLS verifies the
//! server against the webpki roots under the name the guest asked for (SNI), as the
//! default does.
//!
//! The response body is metered on its way to the guest: bytes are counted, the body
//! is cut after the grant's cap (the guest's next read fails), and it fails if no byte
//! arrives within the between-bytes timeout.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::Ledger;

/// The future that drives the connection after the response head has arrived; it
/// lives as long as the guest holds the response body.
pub type Connection = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// How long each phase of one request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// DNS, TCP connect and TLS handshake together.
    pub connect: Duration,
    /// From the request being sent to the response head.
    pub first_byte: Duration,
    /// Between two frames of the response body.
    pub between_bytes: Duration,
}

impl Timeouts {
    /// `limit` for every phase, or the guest's own option where it asked for less.
    pub fn new(limit: Duration, options: Option<RequestOptions>) -> Timeouts {
        let options = options.unwrap_or_default();
        let pick = |asked: Option<Duration>| asked.map_or(limit, |a| a.min(limit));
        Timeouts {
            connect: pick(options.connect_timeout),
            first_byte: pick(options.first_byte_timeout),
            between_bytes: pick(options.between_bytes_timeout),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// One TLS client configuration for the process: webpki roots, ring, HTTP/1.1.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Connects to the first of `addrs` that accepts (TLS to `tls` when set) before
/// `deadline`, sends `request` and returns the response with a metered body.
pub async fn send(
    request: Request<WasiBody>,
    addrs: Vec<SocketAddr>,
    tls: Option<ServerName<'static>>,
    timeouts: Timeouts,
    deadline: Instant,
    max_response_bytes: u64,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<(Response<WasiBody>, Connection), Error> {
    let stream = tokio::time::timeout_at(deadline, connect(&addrs, tls))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let (mut sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries only the path: scheme and authority are for proxies.
    let (mut parts, body) = request.into_parts();
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let sent = ledger.clone();
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                sent.lock().expect("egress ledger").usage.bytes_sent += data.len() as u64;
            }
            frame
        })
        .boxed_unsync();
    let request = Request::from_parts(parts, body);

    let send = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        Ok::<_, Error>(response.map(|incoming| {
            MeteredBody {
                incoming,
                idle: Box::pin(tokio::time::sleep(timeouts.between_bytes)),
                between_bytes: timeouts.between_bytes,
                received: 0,
                cap: max_response_bytes,
                state: State::Open,
                ledger,
            }
            .boxed_unsync()
        }))
    };

    // Wait for the response head while driving the connection, as the default does.
    let mut send = pin!(send);
    let mut conn = Some(conn);
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(driving) = conn.as_mut() else {
                return Poll::Pending;
            };
            let ended = ready!(Pin::new(driving).poll(cx));
            conn = None;
            match ended {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let connection: Connection = Box::new(async move {
        match conn {
            Some(conn) => conn.await.map_err(|e| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                }
            }),
            None => Ok(()),
        }
    });
    Ok((response, connection))
}

async fn connect(
    addrs: &[SocketAddr],
    tls: Option<ServerName<'static>>,
) -> Result<Box<dyn Stream>, Error> {
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(Error::Connect(e)),
        (None, None) => return Err(Error::DestinationNotFound),
    };
    match tls {
        None => Ok(Box::new(tcp)),
        Some(name) => {
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            let stream = connector.connect(name, tcp).await.map_err(Error::Tls)?;
            Ok(Box::new(stream))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The cap was reached: the next poll fails with `HTTP-response-body-size`.
    Cut,
    Done,
}

/// A response body that counts what it delivers, stops at the cap, and fails when the
/// server goes quiet for longer than the between-bytes timeout.
struct MeteredBody {
    incoming: hyper::body::Incoming,
    idle: Pin<Box<Sleep>>,
    between_bytes: Duration,
    received: u64,
    cap: u64,
    state: State,
    ledger: Arc<Mutex<Ledger>>,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match this.state {
            State::Done => return Poll::Ready(None),
            State::Cut => {
                this.state = State::Done;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
            }
            State::Open => {}
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.state = State::Done;
                Poll::Ready(Some(Err(if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                })))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.between_bytes;
                this.idle.as_mut().reset(next);
                let mut data = match frame.into_data() {
                    Ok(data) => data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                };
                let room = this.cap - this.received;
                let mut ledger = this.ledger.lock().expect("egress ledger");
                if data.len() as u64 > room {
                    data.truncate(room as usize);
                    this.state = State::Cut;
                    ledger.usage.responses_cut += 1;
                }
                this.received += data.len() as u64;
                ledger.usage.bytes_received += data.len() as u64;
                drop(ledger);
                if data.is_empty() && this.state == State::Cut {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                this.state = State::Done;
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Cut => false,
            State::Open => self.incoming.is_end_stream(),
        }
    }
}
