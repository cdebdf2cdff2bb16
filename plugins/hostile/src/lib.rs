//! `hostile`: an agent that misbehaves on purpose, one way per action, so the host's
//! tests can check that each limit and each denial holds.
//!
//! Do not grant this agent anything in production.
//!
//! # Actions
//!
//! Actions marked "any input" ignore their input (any JSON value works, `{}` is usual).
//!
//! - Runaway: `spin` (any input) loops forever; `hog_memory` `{ "chunk_bytes"?: 1048576 }`
//!   allocates chunks, writes to every page of each and keeps them all, forever;
//!   `recurse` (any input) recurses without bound until the *wasm* stack overflows;
//!   `flood_logs` (any input) logs 1024-byte info lines forever; `print_flood` (any
//!   input) writes 1024-byte lines to stdout forever.
//! - Crashes: `panic` (any input) panics with "hostile agent panicked on purpose";
//!   `unreachable` (any input) executes the wasm `unreachable` instruction.
//! - Errors and outputs: `fail` (any input) returns the error `upstream_unavailable`,
//!   "the upstream service is down", retryable; `huge_output` `{ "bytes": n }` returns a
//!   JSON string of `n` `x` characters.
//! - Well-behaved, for timing and output tests: `print` `{ "stdout"?: s, "stderr"?: s }`
//!   writes each string as is (no newline added), flushes, and returns `{}`;
//!   `every_byte` `{ "fail"?: bool }` writes the bytes 0 to 255 to stdout and to stderr,
//!   logs the characters U+0000 to U+00FF as one info line, and returns them as
//!   `{ "chars": s }` (with `fail`, the error `every\0byte` with them as its message);
//!   `sleep` `{ "ms": n }` sleeps and returns `{ "slept_ms": n }`; `burn`
//!   `{ "iterations": n }` runs a deterministic integer loop and returns
//!   `{ "checksum": u64 }` (see [`checksum`]).
//! - Capability probes, which succeed as actions and report what happened as
//!   `{ "succeeded": bool, "detail": string }`, where `detail` is the value read or the
//!   error text: `read_file` `{ "path" }` (`std::fs::read_to_string`); `read_env`
//!   `{ "name" }` (`std::env::var`, plus `"vars"`: how many variables
//!   `std::env::vars()` sees); `open_socket` `{ "addr": "127.0.0.1:80" }` (a TCP connect
//!   through `wasi:sockets`; `detail` is the first error, or `connected`); and
//!   `http_request` `{ "url" }` (a GET through `wasi:http/outgoing-handler`; `detail` is
//!   the first error, or `status <code>`); `read_config` `{ "name" }` and `read_secret`
//!   `{ "name" }` (`corral_sdk::config`; `detail` is the value, `(unset)`, or the error
//!   as `code: message`).
//! - Leaks, for the host's redaction: `leak_secret` `{ "name", "fail"?: bool }` reads the
//!   secret and writes it to a warn log line (`the secret is <s>`), stdout (`stdout:
//!   <s>`), stderr (`stderr: <s>`), and returns `{ "leaked": s, "nested": { "again":
//!   "<s>" } }` (with `fail`, the error `leaky_error`, `failed with <s> inside`).

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use corral_sdk::{Error, Level, config};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn spin(_: IgnoredAny) -> Result<(), Error> {
    // The state escapes through `black_box`, so the loop has an effect to keep.
    let mut state = 1u64;
    loop {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        black_box(state);
    }
}

#[derive(Deserialize)]
struct HogMemory {
    #[serde(default = "one_mebibyte")]
    chunk_bytes: usize,
}

fn one_mebibyte() -> usize {
    1 << 20
}

fn hog_memory(input: HogMemory) -> Result<(), Error> {
    let size = input.chunk_bytes.max(1);
    let mut chunks = Vec::new();
    loop {
        let mut chunk = vec![0u8; size];
        // Write every page, so the memory is really used, not just reserved.
        for i in (0..size).step_by(4096) {
            chunk[i] = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// Recurses until the wasm stack overflows. The result of each call feeds a
/// non-associative combination, so the call cannot become a loop, and nothing takes a
/// local's address, so the frames live on the wasm stack, not in linear memory.
#[inline(never)]
fn descend(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    descend(depth + 1, limit).rotate_left(7) ^ depth
}

fn recurse(input: Value) -> Result<u64, Error> {
    // A limit the optimizer cannot know; in practice it is never reached.
    let limit = u64::MAX - u64::from(input.is_null());
    Ok(descend(0, limit))
}

fn panic(_: IgnoredAny) -> Result<(), Error> {
    panic!("hostile agent panicked on purpose")
}

fn unreachable(_: IgnoredAny) -> Result<(), Error> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    // So the crate still type-checks natively (e.g. `cargo check` without `--target`).
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn fail(_: IgnoredAny) -> Result<(), Error> {
    Err(Error::new("upstream_unavailable", "the upstream service is down").retryable())
}

#[derive(Deserialize)]
struct HugeOutput {
    bytes: usize,
}

fn huge_output(input: HugeOutput) -> Result<String, Error> {
    Ok("x".repeat(input.bytes))
}

fn flood_logs(_: IgnoredAny) -> Result<(), Error> {
    let line = "x".repeat(1024);
    loop {
        corral_sdk::log(Level::Info, &line);
    }
}

#[derive(Deserialize)]
struct Print {
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
}

fn print(input: Print) -> Result<Value, Error> {
    let written = std::io::stdout()
        .write_all(input.stdout.as_bytes())
        .and_then(|()| std::io::stdout().flush())
        .and_then(|()| std::io::stderr().write_all(input.stderr.as_bytes()))
        .and_then(|()| std::io::stderr().flush());
    written.map_err(|e| Error::new("io_error", e.to_string()))?;
    Ok(json!({}))
}

fn print_flood(_: IgnoredAny) -> Result<(), Error> {
    let mut line = "x".repeat(1023);
    line.push('\n');
    let mut stdout = std::io::stdout();
    loop {
        // Errors (a closed or full pipe) don't stop the flood: only the host can.
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.flush();
    }
}

#[derive(Deserialize)]
struct EveryByte {
    #[serde(default)]
    fail: bool,
}

fn every_byte(input: EveryByte) -> Result<Value, Error> {
    let bytes: Vec<u8> = (0..=255).collect();
    let chars: String = (0..=255u32).filter_map(char::from_u32).collect();
    let written = std::io::stdout()
        .write_all(&bytes)
        .and_then(|()| std::io::stdout().flush())
        .and_then(|()| std::io::stderr().write_all(&bytes))
        .and_then(|()| std::io::stderr().flush());
    written.map_err(|e| Error::new("io_error", e.to_string()))?;
    corral_sdk::log(Level::Info, &chars);
    if input.fail {
        return Err(Error::new("every\0byte", chars));
    }
    Ok(json!({ "chars": chars }))
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

fn sleep(input: Sleep) -> Result<Value, Error> {
    std::thread::sleep(Duration::from_millis(input.ms));
    Ok(json!({ "slept_ms": input.ms }))
}

#[derive(Deserialize)]
struct Burn {
    iterations: u64,
}

/// What `burn` computes: `x = 0; for i in 0..iterations { x = x * 6364136223846793005 +
/// (i ^ 1442695040888963407) }` in wrapping `u64` arithmetic.
pub fn checksum(iterations: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iterations {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i ^ 1442695040888963407);
    }
    x
}

fn burn(input: Burn) -> Result<Value, Error> {
    Ok(json!({ "checksum": checksum(black_box(input.iterations)) }))
}

/// What a capability probe reports.
#[derive(Serialize)]
struct Probe {
    succeeded: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vars: Option<usize>,
}

impl Probe {
    fn from<T: ToString, E: ToString>(result: Result<T, E>) -> Probe {
        let (succeeded, detail) = match result {
            Ok(value) => (true, value.to_string()),
            Err(e) => (false, e.to_string()),
        };
        Probe {
            succeeded,
            detail,
            vars: None,
        }
    }
}

#[derive(Deserialize)]
struct ReadFile {
    path: String,
}

fn read_file(input: ReadFile) -> Result<Probe, Error> {
    Ok(Probe::from(std::fs::read_to_string(&input.path)))
}

#[derive(Deserialize)]
struct ReadEnv {
    name: String,
}

fn read_env(input: ReadEnv) -> Result<Probe, Error> {
    let probe = Probe::from(std::env::var(&input.name));
    Ok(Probe {
        vars: Some(std::env::vars().count()),
        ..probe
    })
}

#[derive(Deserialize)]
struct OpenSocket {
    addr: String,
}

fn open_socket(input: OpenSocket) -> Result<Probe, Error> {
    let addr: std::net::SocketAddr = input
        .addr
        .parse()
        .map_err(|e| Error::invalid_input(format!("`addr` {:?}: {e}", input.addr)))?;
    Ok(Probe::from(connect(addr)))
}

fn connect(addr: std::net::SocketAddr) -> Result<&'static str, String> {
    use wasi::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    let (family, remote) = match addr {
        std::net::SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (a0, a1, a2, a3),
                }),
            )
        }
        std::net::SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    flow_info: a.flowinfo(),
                    address: (s0, s1, s2, s3, s4, s5, s6, s7),
                    scope_id: a.scope_id(),
                }),
            )
        }
    };
    let describe = |step: &str, e: ErrorCode| format!("{step}: {e:?}");
    let network = wasi::sockets::instance_network::instance_network();
    let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(family)
        .map_err(|e| describe("create-tcp-socket", e))?;
    socket
        .start_connect(&network, remote)
        .map_err(|e| describe("start-connect", e))?;
    loop {
        match socket.finish_connect() {
            Ok(_streams) => return Ok("connected"),
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            Err(e) => return Err(describe("finish-connect", e)),
        }
    }
}

#[derive(Deserialize)]
struct HttpRequest {
    url: String,
}

fn http_request(input: HttpRequest) -> Result<Probe, Error> {
    let (scheme, rest) = input
        .url
        .split_once("://")
        .ok_or_else(|| Error::invalid_input(format!("`url` {:?} has no scheme", input.url)))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    Ok(Probe::from(get(scheme, authority, path)))
}

fn get(scheme: &str, authority: &str, path: &str) -> Result<String, String> {
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let request = OutgoingRequest::new(Fields::new());
    let rejected = |what: &str| format!("the request rejected its {what}");
    request
        .set_method(&Method::Get)
        .map_err(|()| rejected("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| rejected("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| rejected("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| rejected("path"))?;
    let body = request.body().map_err(|()| rejected("body"))?;
    let response = wasi::http::outgoing_handler::handle(request, None)
        .map_err(|e| format!("outgoing-handler.handle: {e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("outgoing-body.finish: {e:?}"))?;
    let response = loop {
        match response.get() {
            Some(result) => break result,
            None => response.subscribe().block(),
        }
    };
    match response {
        Ok(Ok(response)) => Ok(format!("status {}", response.status())),
        Ok(Err(e)) => Err(format!("response: {e:?}")),
        Err(()) => Err("response: already taken".to_string()),
    }
}

/// Creates host resources (clock pollables) forever without dropping them: the host's
/// resource table must stop it.
fn hoard_handles(_: Value) -> Result<Value, Error> {
    let mut kept = Vec::new();
    loop {
        kept.push(wasi::clocks::monotonic_clock::subscribe_duration(
            1_000_000_000,
        ));
    }
}

#[derive(Deserialize)]
struct ConfigName {
    name: String,
}

/// `detail` is the value, `(unset)`, or the error as `code: message`.
fn config_probe(result: Result<Option<String>, config::ConfigError>) -> Probe {
    Probe::from(result.map(|value| value.unwrap_or_else(|| "(unset)".into())))
}

fn read_config(input: ConfigName) -> Result<Probe, Error> {
    Ok(config_probe(config::get(&input.name)))
}

fn read_secret(input: ConfigName) -> Result<Probe, Error> {
    Ok(config_probe(config::secret(&input.name)))
}

#[derive(Deserialize)]
struct LeakSecret {
    name: String,
    #[serde(default)]
    fail: bool,
}

/// Reads a secret and writes it everywhere a guest can: a log line, stdout, stderr,
/// and the output (or, with `fail`, the error message).
fn leak_secret(input: LeakSecret) -> Result<Value, Error> {
    let secret = config::secret(&input.name)?
        .ok_or_else(|| Error::new("missing_secret", format!("{} is not set", input.name)))?;
    corral_sdk::log(Level::Warn, &format!("the secret is {secret}"));
    println!("stdout: {secret}");
    eprintln!("stderr: {secret}");
    if input.fail {
        return Err(Error::new(
            "leaky_error",
            format!("failed with {secret} inside"),
        ));
    }
    Ok(json!({ "leaked": secret, "nested": { "again": format!("<{secret}>") } }))
}

#[derive(Deserialize)]
struct RandomBytes {
    bytes: u64,
}

/// Asks the host for `bytes` random bytes in one call.
fn random_bytes(input: RandomBytes) -> Result<Value, Error> {
    let bytes = wasi::random::random::get_random_bytes(input.bytes);
    Ok(json!({ "received": bytes.len() }))
}

corral_sdk::agent! {
    description: "Misbehaves on purpose, to test the host's limits and denials",
    actions: {
        spin: "Loop forever",
        hog_memory: "Allocate and touch memory forever",
        recurse: "Recurse until the wasm stack overflows",
        panic: "Panic",
        unreachable: "Execute the wasm unreachable instruction",
        fail: "Return a retryable upstream_unavailable error",
        huge_output: "Return a JSON string of the given number of bytes",
        flood_logs: "Log 1 KiB lines forever",
        print: "Write the given text to stdout and stderr",
        print_flood: "Write to stdout forever",
        sleep: "Sleep for the given number of milliseconds",
        every_byte: "Write every byte value to stdout, stderr, a log line and the output or error",
        burn: "Run a deterministic integer loop and return its checksum",
        read_file: "Try to read a file",
        read_env: "Try to read an environment variable",
        open_socket: "Try to open a TCP connection",
        http_request: "Try to send an HTTP GET request",
        hoard_handles: "Create host resources forever without dropping them",
        random_bytes: "Ask the host for the given number of random bytes at once",
        read_config: "Try to read a config value",
        read_secret: "Try to read a secret",
        leak_secret: "Read a secret and write it to the logs, stdout, stderr and output",
    }
}
