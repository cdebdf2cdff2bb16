//! Outbound HTTP through `wasi:http`: denied by default, granted by an allowlist, and
//! every check and bound of the grant, against a real server on 127.0.0.1.

use std::time::{Duration, Instant};

use corral_host::limits::Limits;
use corral_host::policy::{Grants, HttpGrant};
use corral_host::runtime::{
    Denial, DenialReason, Execution, HttpUsage, InvokeRequest, Outcome, Runtime,
};
use corral_tests::harness::{load, runtime};
use corral_tests::plugins::{FETCH, HOSTILE};
use corral_tests::upstream::{HELLO, Upstream};
use serde_json::{Value, json};

/// An HTTP grant for `rules` with the default bounds.
fn grant(rules: &[String]) -> HttpGrant {
    HttpGrant::new(rules.iter().map(|r| r.parse().unwrap()).collect())
}

fn grants(http: HttpGrant) -> Grants {
    Grants {
        http: Some(http),
        ..Grants::default()
    }
}

async fn run(
    runtime: &Runtime,
    plugin: &str,
    action: &str,
    input: Value,
    grants: Grants,
) -> Execution {
    let agent = load(runtime, plugin).await;
    let request =
        InvokeRequest::new(action, input.to_string(), Limits::default()).with_grants(grants);
    runtime
        .invoke(&agent, request)
        .await
        .expect("the host sets up the run")
}

/// Runs `fetch` once on a fresh runtime.
async fn fetch(action: &str, input: Value, grants: Grants) -> Execution {
    run(&runtime(), FETCH, action, input, grants).await
}

fn output(execution: &Execution) -> Value {
    let text = execution
        .output
        .as_deref()
        .unwrap_or_else(|| panic!("no output: {execution:#?}"));
    serde_json::from_str(text).expect("output is JSON")
}

/// The agent error's code, asserting the run ended with one.
fn error_code(execution: &Execution) -> &str {
    assert_eq!(execution.outcome, Outcome::AgentError, "{execution:#?}");
    &execution.error.as_ref().unwrap().code
}

fn usage(requests: u64, requests_denied: u64, bytes_sent: u64, bytes_received: u64) -> HttpUsage {
    HttpUsage {
        requests,
        requests_denied,
        bytes_sent,
        bytes_received,
        responses_cut: 0,
    }
}

fn only_denial(execution: &Execution) -> &Denial {
    assert_eq!(execution.denials.len(), 1, "{:#?}", execution.denials);
    &execution.denials[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_a_request_is_denied_and_recorded() {
    let upstream = Upstream::start().await;
    let execution = fetch(
        "get",
        json!({ "url": upstream.url("/hello?token=secret") }),
        Grants::default(),
    )
    .await;
    assert_eq!(error_code(&execution), "http_request_denied");
    assert_eq!(execution.usage.http, usage(0, 1, 0, 0));
    let denial = only_denial(&execution);
    assert_eq!(denial.capability, "http");
    assert_eq!(
        denial.target,
        upstream.rule(),
        "scheme://host:port only, never the path"
    );
    assert_eq!(denial.reason, DenialReason::NotGranted);
    assert!(upstream.hits().is_empty(), "nothing may reach the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_address_and_port_is_reached_and_every_byte_counted() {
    let upstream = Upstream::start().await;
    let runtime = runtime();
    let allowed = grants(grant(&[upstream.rule()]));

    let execution = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": upstream.url("/hello") }),
        allowed.clone(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let got = output(&execution);
    assert_eq!(got["status"], 200);
    assert_eq!(got["body"], HELLO);
    assert_eq!(got["body_length"], HELLO.len());
    assert_eq!(execution.usage.http, usage(1, 0, 0, HELLO.len() as u64));
    assert!(execution.denials.is_empty());

    let body = "a body of thirty-one bytes, yes";
    let execution = run(
        &runtime,
        FETCH,
        "post",
        json!({ "url": upstream.url("/echo"), "body": body }),
        allowed,
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(output(&execution)["body"], body);
    assert_eq!(
        execution.usage.http,
        usage(1, 0, body.len() as u64, body.len() as u64)
    );
    assert_eq!(upstream.hits(), ["GET /hello", "POST /echo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_port_scheme_or_host_is_denied_before_anything_is_sent() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let runtime = runtime();
    let port = upstream.port();
    let cases = [
        (other.url("/hello"), other.rule()),
        (
            format!("https://127.0.0.1:{port}/hello"),
            format!("https://127.0.0.1:{port}"),
        ),
        (
            format!("http://localhost:{port}/hello"),
            format!("http://localhost:{port}"),
        ),
        (
            format!("http://127.0.0.2:{port}/hello"),
            format!("http://127.0.0.2:{port}"),
        ),
    ];
    for (url, target) in cases {
        let execution = run(
            &runtime,
            FETCH,
            "get",
            json!({ "url": url }),
            grants(grant(&[upstream.rule()])),
        )
        .await;
        assert_eq!(error_code(&execution), "http_request_denied", "{url}");
        assert_eq!(execution.usage.http, usage(0, 1, 0, 0), "{url}");
        let denial = only_denial(&execution);
        assert_eq!(
            (denial.target.as_str(), denial.reason),
            (target.as_str(), DenialReason::NotAllowed)
        );
        assert!(
            denial.detail.contains(&format!(
                "matches no rule of the grant ({})",
                upstream.rule()
            )),
            "{}",
            denial.detail
        );
    }
    assert!(upstream.hits().is_empty());
    assert!(other.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_reaches_loopback_only_when_a_rule_names_the_address_itself() {
    let upstream = Upstream::start().await;
    let runtime = runtime();
    let port = upstream.port();
    let url = format!("http://localhost:{port}/hello");

    // `localhost` is an ordinary name: allowing it does not open loopback.
    let by_name = grants(grant(&[format!("http://localhost:{port}")]));
    let execution = run(&runtime, FETCH, "get", json!({ "url": url }), by_name).await;
    assert_eq!(error_code(&execution), "destination_ip_prohibited");
    assert_eq!(execution.usage.http, usage(0, 1, 0, 0));
    let denial = only_denial(&execution);
    assert_eq!(denial.reason, DenialReason::ProhibitedAddress);
    assert_eq!(denial.target, format!("http://localhost:{port}"));
    assert!(
        denial.detail.starts_with("localhost resolved to "),
        "{}",
        denial.detail
    );
    assert!(denial.detail.contains("a loopback"), "{}", denial.detail);
    assert!(upstream.hits().is_empty());

    // Naming the loopback addresses (both families, whichever the resolver returns)
    // allows the name to reach them.
    let named = grants(grant(&[
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
    ]));
    let execution = run(&runtime, FETCH, "get", json!({ "url": url }), named).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(output(&execution)["body"], HELLO);
    assert_eq!(execution.usage.http, usage(1, 0, 0, HELLO.len() as u64));
    assert_eq!(upstream.hits(), ["GET /hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_covers_subdomains_but_not_the_apex() {
    let upstream = Upstream::start().await;
    let runtime = runtime();
    let port = upstream.port();
    let wildcard = grants(grant(&[format!("http://*.localhost:{port}")]));

    let apex = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": format!("http://localhost:{port}/hello") }),
        wildcard.clone(),
    )
    .await;
    assert_eq!(error_code(&apex), "http_request_denied");
    assert_eq!(only_denial(&apex).reason, DenialReason::NotAllowed);

    // The subdomain passes the allowlist; then it either does not resolve or resolves
    // to loopback, which the wildcard does not name. Either way nothing is reached.
    let sub = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": format!("http://api.localhost:{port}/hello") }),
        wildcard,
    )
    .await;
    let code = error_code(&sub);
    assert!(
        code == "dns_error" || code == "destination_ip_prohibited",
        "{sub:#?}"
    );
    assert!(
        sub.denials
            .iter()
            .all(|d| d.reason != DenialReason::NotAllowed),
        "{:#?}",
        sub.denials
    );
    assert!(upstream.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_address_is_never_reached_through_an_unrelated_rule() {
    let execution = fetch(
        "get",
        json!({ "url": "http://169.254.169.254/latest/meta-data/" }),
        grants(grant(&[
            "http://*.example.com".into(),
            "http://127.0.0.1:1".into(),
        ])),
    )
    .await;
    assert_eq!(error_code(&execution), "http_request_denied");
    let denial = only_denial(&execution);
    assert_eq!(denial.target, "http://169.254.169.254:80");
    assert_eq!(denial.reason, DenialReason::NotAllowed);
    assert_eq!(execution.usage.http.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_redirect_hop_is_checked_again() {
    let upstream = Upstream::start().await;
    let elsewhere = Upstream::start().await;
    let runtime = runtime();
    let allowed = grants(grant(&[upstream.rule()]));

    // Not followed: the 302 comes back as it is.
    let to_hello = upstream.url("/redirect?to=/hello");
    let execution = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": to_hello }),
        allowed.clone(),
    )
    .await;
    assert_eq!(output(&execution)["status"], 302);
    assert_eq!(execution.usage.http.requests, 1);

    // Followed within the allowlist.
    let execution = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": to_hello, "follow_redirects": 3 }),
        allowed.clone(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let got = output(&execution);
    assert_eq!(
        (got["status"].clone(), got["body"].clone()),
        (json!(200), json!(HELLO))
    );
    assert_eq!(got["redirects"], json!([upstream.url("/hello")]));
    assert_eq!(execution.usage.http.requests, 2);

    // Followed to a server the grant does not list: that hop is refused.
    let target = elsewhere.url("/hello");
    let away = upstream.url(&format!("/redirect?to={target}"));
    let execution = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": away, "follow_redirects": 3 }),
        allowed,
    )
    .await;
    assert_eq!(error_code(&execution), "http_request_denied");
    assert!(
        execution
            .error
            .as_ref()
            .unwrap()
            .message
            .starts_with(&target),
        "{execution:#?}"
    );
    assert_eq!(execution.usage.http.requests, 1);
    assert_eq!(execution.usage.http.requests_denied, 1);
    let denial = only_denial(&execution);
    assert_eq!(
        (denial.target.clone(), denial.reason),
        (elsewhere.rule(), DenialReason::NotAllowed)
    );
    assert!(
        elsewhere.hits().is_empty(),
        "the redirect target must not be reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_cap_is_cut_and_the_read_fails() {
    let upstream = Upstream::start().await;
    let runtime = runtime();
    let capped = grants(HttpGrant {
        max_response_bytes: 1000,
        ..grant(&[upstream.rule()])
    });

    let exact = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": upstream.url("/bytes/1000") }),
        capped.clone(),
    )
    .await;
    assert_eq!(execution_ok(&exact)["body_length"], 1000);
    assert_eq!(exact.usage.http, usage(1, 0, 0, 1000));

    let over = run(
        &runtime,
        FETCH,
        "get",
        json!({ "url": upstream.url("/bytes/100000") }),
        capped,
    )
    .await;
    assert_eq!(error_code(&over), "body_stream_failed");
    let message = &over.error.as_ref().unwrap().message;
    assert!(
        message.contains("HTTP response body size exceeds limit: 1000 bytes"),
        "{message}"
    );
    assert_eq!(
        over.usage.http,
        HttpUsage {
            responses_cut: 1,
            ..usage(1, 0, 0, 1000)
        }
    );
}

fn execution_ok(execution: &Execution) -> Value {
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    output(execution)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limit_are_refused() {
    let upstream = Upstream::start().await;
    let limited = grants(HttpGrant {
        max_requests: 2,
        ..grant(&[upstream.rule()])
    });
    let execution = fetch(
        "repeat",
        json!({ "url": upstream.url("/hello"), "times": 4 }),
        limited,
    )
    .await;
    assert_eq!(
        execution_ok(&execution)["results"],
        json!([
            { "status": 200 },
            { "status": 200 },
            { "error": "connection_limit_reached" },
            { "error": "connection_limit_reached" },
        ])
    );
    assert_eq!(execution.usage.http, usage(2, 2, 0, 2 * HELLO.len() as u64));
    assert_eq!(execution.denials.len(), 2);
    assert!(
        execution
            .denials
            .iter()
            .all(|d| d.reason == DenialReason::RequestLimit)
    );
    assert_eq!(upstream.hits().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_at_the_grants_timeout() {
    let upstream = Upstream::start().await;
    let quick = grants(HttpGrant {
        timeout_ms: 300,
        ..grant(&[upstream.rule()])
    });
    let started = Instant::now();
    // The guest asks for 10 s; the grant's 300 ms wins.
    let execution = fetch(
        "get",
        json!({ "url": upstream.url("/silent"), "timeout_ms": 10_000 }),
        quick,
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(error_code(&execution), "connection_read_timeout");
    assert!(execution.error.as_ref().unwrap().retryable);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(execution.usage.http, usage(1, 0, 0, 0));
    assert_eq!(upstream.hits(), ["GET /silent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_fails_at_the_grants_timeout() {
    let upstream = Upstream::start().await;
    let quick = grants(HttpGrant {
        timeout_ms: 300,
        ..grant(&[upstream.rule()])
    });
    let started = Instant::now();
    let execution = fetch("get", json!({ "url": upstream.url("/stall") }), quick).await;
    let elapsed = started.elapsed();
    assert_eq!(error_code(&execution), "body_stream_failed");
    let message = &execution.error.as_ref().unwrap().message;
    assert!(message.contains("connection read timeout"), "{message}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(execution.usage.http, usage(1, 0, 0, "first".len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_tls_even_to_an_allowed_address() {
    // The server speaks plain HTTP, so the TLS handshake fails: the request was not
    // sent in clear text.
    let upstream = Upstream::start().await;
    let port = upstream.port();
    let tls = grants(grant(&[format!("https://127.0.0.1:{port}")]));
    let execution = fetch(
        "get",
        json!({ "url": format!("https://127.0.0.1:{port}/hello") }),
        tls,
    )
    .await;
    assert_eq!(error_code(&execution), "tls_protocol_error");
    assert_eq!(execution.usage.http, usage(1, 0, 0, 0));
    assert!(upstream.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sockets_stay_closed_when_http_is_granted() {
    let upstream = Upstream::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let http = grants(grant(&[upstream.rule(), format!("http://{addr}")]));
    let runtime = runtime();

    let socket = run(
        &runtime,
        HOSTILE,
        "open_socket",
        json!({ "addr": addr.to_string() }),
        http.clone(),
    )
    .await;
    assert_eq!(execution_ok(&socket)["succeeded"], false);
    let socket_to_upstream = run(
        &runtime,
        HOSTILE,
        "open_socket",
        json!({ "addr": upstream.url("").trim_start_matches("http://") }),
        http.clone(),
    )
    .await;
    assert_eq!(execution_ok(&socket_to_upstream)["succeeded"], false);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing may have connected");

    // The same grant does let the hostile agent's HTTP probe through.
    let probe = run(
        &runtime,
        HOSTILE,
        "http_request",
        json!({ "url": upstream.url("/hello") }),
        http,
    )
    .await;
    assert_eq!(
        execution_ok(&probe),
        json!({ "succeeded": true, "detail": "status 200" })
    );
    assert_eq!(upstream.hits(), ["GET /hello"]);
}
