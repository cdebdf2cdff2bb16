//! Outbound HTTP from an agent, through the standard `wasi:http/outgoing-handler`.
//!
//! Every request is denied unless the agent's policy grants HTTP to its scheme, host
//! and port. A refused request fails with an [`HttpError`] whose [code](HttpError::code)
//! says why: `http_request_denied` (no grant, or not on the allowlist),
//! `destination_ip_prohibited` (the name resolved to a loopback, private or link-local
//! address), `connection_limit_reached` (the invocation used up its requests). Other
//! codes are the `wasi:http` error codes in snake_case, such as `connection_refused` or
//! `connection_read_timeout`.
//!
//! Redirects are not followed: a `3xx` response is returned as it is, with its
//! `location` header. Following it is a new request, which the host checks again.
//!
//! # Examples
//!
//! ```no_run
//! use corral_sdk::{Error, http};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Price { usd: f64 }
//!
//! fn price(symbol: String) -> Result<f64, Error> {
//!     let response = http::get(&format!("https://api.example.com/price/{symbol}"))?;
//!     if response.status != 200 {
//!         return Err(Error::new("upstream_error", format!("status {}", response.status)));
//!     }
//!     Ok(response.json::<Price>()?.usd)
//! }
//!
//! fn publish(report: String) -> Result<u16, Error> {
//!     let response = http::Request::post("https://hooks.example.com/reports", report)
//!         .header("content-type", "application/json")
//!         .timeout(std::time::Duration::from_secs(2))
//!         .send()?;
//!     Ok(response.status)
//! }
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// Sends a `GET` request to `url` and reads the whole response.
///
/// # Examples
///
/// ```no_run
/// let response = corral_sdk::http::get("https://example.com/")?;
/// println!("{} bytes", response.body.len());
/// # Ok::<(), corral_sdk::http::HttpError>(())
/// ```
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
}

/// A request to build up and [`send`](Request::send).
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with `method` to `url` (`http://` or `https://`), no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` request with `body`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::Post, url).body(body)
    }

    /// Adds a header. `host`, `connection` and the other hop-by-hop headers are set by
    /// the host and refused here.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (sent with a `content-length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// How long to wait to connect, for the first response byte, and between bytes.
    /// The host's grant sets the longest allowed; asking for more gets that.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        let mut headers = self.headers;
        if !self.body.is_empty() {
            headers.push(("content-length".into(), self.body.len().to_string().into()));
        }
        let fields = Fields::from_list(&headers)
            .map_err(|e| HttpError::new("invalid_header", format!("{e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
            Method::Options => WasiMethod::Options,
        };
        let invalid =
            |what: &str| HttpError::new("invalid_url", format!("{}: bad {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| invalid("path"))?;
        let options = self.timeout.map(|timeout| {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // Each setter only fails when the host does not support that timeout.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });

        let outgoing = request
            .body()
            .map_err(|()| HttpError::new("internal", "the request body was taken"))?;
        let pending = outgoing_handler::handle(request, options).map_err(HttpError::from)?;
        write_body(outgoing, &self.body)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(code.into()),
            Some(Err(())) | None => {
                return Err(HttpError::new("internal", "the response was not ready"));
            }
        };
        let status = response.status();
        let headers = response.headers().entries().into_iter().collect::<Vec<_>>();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::new("internal", "the response body was taken"))?;
        let body = read_body(&incoming)?;
        drop(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn write_body(outgoing: OutgoingBody, body: &[u8]) -> Result<(), HttpError> {
    if !body.is_empty() {
        let stream = outgoing
            .write()
            .map_err(|()| HttpError::new("internal", "the request body stream was taken"))?;
        // `blocking-write-and-flush` takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(HttpError::from)
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::new("internal", "the response body stream was taken"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}

fn stream_error(error: StreamError) -> HttpError {
    match error {
        StreamError::Closed => HttpError::new("connection_terminated", "the stream closed"),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => code.into(),
            None => HttpError::new("body_stream_failed", e.to_debug_string()),
        },
    }
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers, in order, names in lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case), if it is present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as text, invalid UTF-8 replaced with U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::new(
                "invalid_response",
                format!("the body is not the expected JSON: {e}"),
            )
        })
    }
}

/// Why a request failed: a stable snake_case code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    code: String,
    message: String,
}

impl HttpError {
    fn new(code: &str, message: impl Into<String>) -> HttpError {
        HttpError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The `wasi:http` error code in snake_case (`http_request_denied`,
    /// `destination_ip_prohibited`, `connection_timeout`, …), or `invalid_url`,
    /// `invalid_header`, `invalid_response`, `body_stream_failed`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// What happened, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again later may help: timeouts and connection failures.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code.as_str(),
            "dns_timeout"
                | "destination_unavailable"
                | "connection_refused"
                | "connection_terminated"
                | "connection_timeout"
                | "connection_read_timeout"
                | "connection_write_timeout"
                | "http_response_timeout"
        )
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    /// The agent's error, with the same code and message.
    fn from(e: HttpError) -> crate::Error {
        let retryable = e.is_retryable();
        let error = crate::Error::new(e.code, e.message);
        if retryable { error.retryable() } else { error }
    }
}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> HttpError {
        let name = match &code {
            ErrorCode::DnsTimeout => "dns_timeout",
            ErrorCode::DnsError(_) => "dns_error",
            ErrorCode::DestinationNotFound => "destination_not_found",
            ErrorCode::DestinationUnavailable => "destination_unavailable",
            ErrorCode::DestinationIpProhibited => "destination_ip_prohibited",
            ErrorCode::DestinationIpUnroutable => "destination_ip_unroutable",
            ErrorCode::ConnectionRefused => "connection_refused",
            ErrorCode::ConnectionTerminated => "connection_terminated",
            ErrorCode::ConnectionTimeout => "connection_timeout",
            ErrorCode::ConnectionReadTimeout => "connection_read_timeout",
            ErrorCode::ConnectionWriteTimeout => "connection_write_timeout",
            ErrorCode::ConnectionLimitReached => "connection_limit_reached",
            ErrorCode::TlsProtocolError => "tls_protocol_error",
            ErrorCode::TlsCertificateError => "tls_certificate_error",
            ErrorCode::TlsAlertReceived(_) => "tls_alert_received",
            ErrorCode::HttpRequestDenied => "http_request_denied",
            ErrorCode::HttpRequestLengthRequired => "http_request_length_required",
            ErrorCode::HttpRequestBodySize(_) => "http_request_body_size",
            ErrorCode::HttpRequestMethodInvalid => "http_request_method_invalid",
            ErrorCode::HttpRequestUriInvalid => "http_request_uri_invalid",
            ErrorCode::HttpRequestUriTooLong => "http_request_uri_too_long",
            ErrorCode::HttpRequestHeaderSectionSize(_) => "http_request_header_section_size",
            ErrorCode::HttpRequestHeaderSize(_) => "http_request_header_size",
            ErrorCode::HttpRequestTrailerSectionSize(_) => "http_request_trailer_section_size",
            ErrorCode::HttpRequestTrailerSize(_) => "http_request_trailer_size",
            ErrorCode::HttpResponseIncomplete => "http_response_incomplete",
            ErrorCode::HttpResponseHeaderSectionSize(_) => "http_response_header_section_size",
            ErrorCode::HttpResponseHeaderSize(_) => "http_response_header_size",
            ErrorCode::HttpResponseBodySize(_) => "http_response_body_size",
            ErrorCode::HttpResponseTrailerSectionSize(_) => "http_response_trailer_section_size",
            ErrorCode::HttpResponseTrailerSize(_) => "http_response_trailer_size",
            ErrorCode::HttpResponseTransferCoding(_) => "http_response_transfer_coding",
            ErrorCode::HttpResponseContentCoding(_) => "http_response_content_coding",
            ErrorCode::HttpResponseTimeout => "http_response_timeout",
            ErrorCode::HttpUpgradeFailed => "http_upgrade_failed",
            ErrorCode::HttpProtocolError => "http_protocol_error",
            ErrorCode::LoopDetected => "loop_detected",
            ErrorCode::ConfigurationError => "configuration_error",
            ErrorCode::InternalError(_) => "internal_error",
        };
        let message = match &code {
            ErrorCode::HttpRequestDenied => {
                "the host denied the request: the agent's HTTP grant does not list this scheme, host and port".to_string()
            }
            ErrorCode::DestinationIpProhibited => {
                "the host denied the request: the host name resolves to an address the agent's HTTP grant does not allow".to_string()
            }
            ErrorCode::ConnectionLimitReached => {
                "the invocation already made as many HTTP requests as its grant allows".to_string()
            }
            other => format!("{other:?}"),
        };
        HttpError::new(name, message)
    }
}

/// The parts of an `http(s)://authority/path?query` URL a request needs.
struct Url {
    scheme: Scheme,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, HttpError> {
        let invalid = |why: &str| HttpError::new("invalid_url", format!("{url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("write http://host/path or https://host/path"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        let path_and_query = match path_and_query.strip_prefix('?') {
            Some(query) => format!("/?{query}"),
            None => path_and_query.to_string(),
        };
        Ok(Url {
            scheme,
            authority: authority.to_string(),
            path_and_query,
        })
    }
}
