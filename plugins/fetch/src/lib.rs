//! `fetch`: an agent that makes outbound HTTP requests with `corral_sdk::http`. It is
//! the example of the HTTP grant, and the fixture of the host's egress tests.
//!
//! # Actions
//!
//! - `get` `{ "url", "follow_redirects"?: 0, "timeout_ms"?: n }` sends a GET and
//!   returns `{ "status", "body_length", "body", "url", "redirects" }`: `body` is the
//!   body as text, `url` the last URL requested and `redirects` the URLs it was
//!   redirected to, in order. With `follow_redirects: n` it follows up to `n`
//!   redirects (`301`, `302`, `303`, `307`, `308` with a `location`), each a new
//!   request that the host checks again. A failed request is the agent's error, with
//!   the `wasi:http` error code in snake_case (`http_request_denied`,
//!   `destination_ip_prohibited`, …) and the URL in the message.
//! - `post` `{ "url", "body" }` sends `body` as text and returns the same as `get`.
//! - `repeat` `{ "url", "times" }` sends the same GET `times` times and returns
//!   `{ "results": [ { "status" } or { "error": code } ] }`, one per request.

use corral_sdk::http::{self, HttpError, Request, Response};
use corral_sdk::{Error, info};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Get {
    url: String,
    #[serde(default)]
    follow_redirects: u32,
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct Fetched {
    status: u16,
    body_length: usize,
    body: String,
    url: String,
    redirects: Vec<String>,
}

impl Fetched {
    fn new(response: Response, url: String, redirects: Vec<String>) -> Fetched {
        Fetched {
            status: response.status,
            body_length: response.body.len(),
            body: response.text(),
            url,
            redirects,
        }
    }
}

/// The failed request's error, naming the URL.
fn failed(url: &str, e: HttpError) -> Error {
    let error = Error::new(e.code(), format!("{url}: {}", e.message()));
    if e.is_retryable() {
        error.retryable()
    } else {
        error
    }
}

fn get(input: Get) -> Result<Fetched, Error> {
    let mut url = input.url;
    let mut redirects = Vec::new();
    loop {
        let mut request = Request::get(url.clone());
        if let Some(ms) = input.timeout_ms {
            request = request.timeout(std::time::Duration::from_millis(ms));
        }
        let response = request.send().map_err(|e| failed(&url, e))?;
        let location = response.header("location").map(str::to_string);
        let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        match location {
            Some(location) if redirect && (redirects.len() as u32) < input.follow_redirects => {
                url = resolve(&url, &location);
                info!("following a {} to {url}", response.status);
                redirects.push(url.clone());
            }
            _ => return Ok(Fetched::new(response, url, redirects)),
        }
    }
}

/// `location` made absolute against `base`: absolute URLs as they are, `/path` on the
/// same scheme and host.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

#[derive(Deserialize)]
struct Post {
    url: String,
    body: String,
}

fn post(input: Post) -> Result<Fetched, Error> {
    let response = http::Request::post(input.url.clone(), input.body)
        .header("content-type", "text/plain")
        .send()
        .map_err(|e| failed(&input.url, e))?;
    Ok(Fetched::new(response, input.url, Vec::new()))
}

#[derive(Deserialize)]
struct Repeat {
    url: String,
    times: u32,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Attempt {
    Status { status: u16 },
    Error { error: String },
}

#[derive(Serialize)]
struct Repeated {
    results: Vec<Attempt>,
}

fn repeat(input: Repeat) -> Result<Repeated, Error> {
    let results = (0..input.times)
        .map(|_| match http::get(&input.url) {
            Ok(response) => Attempt::Status {
                status: response.status,
            },
            Err(e) => Attempt::Error {
                error: e.code().to_string(),
            },
        })
        .collect();
    Ok(Repeated { results })
}

corral_sdk::agent! {
    description: "Makes outbound HTTP requests (only where its policy grants HTTP)",
    actions: {
        get: "GET a URL, optionally following redirects",
        post: "POST text to a URL",
        repeat: "GET the same URL several times and report each result",
    }
}
