//! `hostile`: an agent that misbehaves on purpose, one action per misdeed, for
//! testing that the host stops each one, records why, and keeps serving.
//!
//! Runaways: `spin`, `hog_memory`, `recurse`, `flood_logs`, `print_flood`, `sleep`.
//! Failures: `panic`, `unreachable`, `fail`, `huge_output`.
//! Capability probes (each returns `{ "succeeded": bool, "detail": string }`):
//! `read_file`, `read_env`, `open_socket`, `http_request`.
//! Helpers: `print` (writes to stdout and stderr) and `burn` (bounded compute).

use std::io::Write;

use corral_sdk::{Error, info};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Empty {}

fn spin(_: Empty) -> Result<Value, Error> {
    let mut counter: u64 = 0;
    loop {
        counter = counter.wrapping_add(1);
        std::hint::black_box(counter);
    }
}

#[derive(Deserialize)]
struct Hog {
    #[serde(default = "one_mib")]
    chunk_bytes: usize,
}

fn one_mib() -> usize {
    1 << 20
}

fn hog_memory(input: Hog) -> Result<Value, Error> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; input.chunk_bytes];
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        kept.push(std::hint::black_box(chunk));
    }
}

/// Non-tail recursion with no addressable locals: it exhausts the wasm stack, not
/// Rust's shadow stack in linear memory.
#[inline(never)]
fn descend(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    descend(n + 1).wrapping_mul(3).wrapping_add(n)
}

fn recurse(_: Empty) -> Result<Value, Error> {
    Ok(json!({ "depth": descend(0) }))
}

fn panic(_: Empty) -> Result<Value, Error> {
    panic!("hostile agent panicked on purpose");
}

fn unreachable(_: Empty) -> Result<Value, Error> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn fail(_: Empty) -> Result<Value, Error> {
    Err(Error::new("upstream_unavailable", "the upstream service is down").retryable())
}

#[derive(Deserialize)]
struct Size {
    bytes: usize,
}

fn huge_output(input: Size) -> Result<String, Error> {
    Ok("x".repeat(input.bytes))
}

fn flood_logs(_: Empty) -> Result<Value, Error> {
    let line = "x".repeat(1024);
    loop {
        info!("{line}");
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
    let mut out = std::io::stdout();
    out.write_all(input.stdout.as_bytes()).map_err(|e| Error::new("io", e.to_string()))?;
    out.flush().map_err(|e| Error::new("io", e.to_string()))?;
    let mut err = std::io::stderr();
    err.write_all(input.stderr.as_bytes()).map_err(|e| Error::new("io", e.to_string()))?;
    err.flush().map_err(|e| Error::new("io", e.to_string()))?;
    Ok(json!({}))
}

fn print_flood(_: Empty) -> Result<Value, Error> {
    let line = "y".repeat(100);
    loop {
        println!("{line}");
    }
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

fn sleep(input: Sleep) -> Result<Value, Error> {
    std::thread::sleep(std::time::Duration::from_millis(input.ms));
    Ok(json!({ "slept_ms": input.ms }))
}

#[derive(Deserialize)]
struct Burn {
    iterations: u64,
}

fn burn(input: Burn) -> Result<Value, Error> {
    let mut x: u64 = 1;
    for i in 0..input.iterations {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
    }
    Ok(json!({ "checksum": x }))
}

#[derive(Serialize)]
struct Probe {
    succeeded: bool,
    detail: String,
}

impl Probe {
    fn from<T: std::fmt::Debug, E: std::fmt::Debug>(result: Result<T, E>) -> Probe {
        match result {
            Ok(v) => Probe { succeeded: true, detail: format!("{v:?}") },
            Err(e) => Probe { succeeded: false, detail: format!("{e:?}") },
        }
    }
}

#[derive(Deserialize)]
struct Path {
    path: String,
}

fn read_file(input: Path) -> Result<Probe, Error> {
    Ok(Probe::from(std::fs::read_to_string(&input.path)))
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Serialize)]
struct EnvProbe {
    #[serde(flatten)]
    probe: Probe,
    vars: usize,
}

fn read_env(input: Name) -> Result<EnvProbe, Error> {
    Ok(EnvProbe {
        probe: Probe::from(std::env::var(&input.name)),
        vars: std::env::vars().count(),
    })
}

#[derive(Deserialize)]
struct Addr {
    addr: String,
}

fn open_socket(input: Addr) -> Result<Probe, Error> {
    use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    let addr: std::net::SocketAddrV4 = input
        .addr
        .parse()
        .map_err(|e| Error::invalid_input(format!("addr: {e}")))?;
    let connect = || -> Result<&'static str, wasi::sockets::network::ErrorCode> {
        let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)?;
        let network = wasi::sockets::instance_network::instance_network();
        let [a, b, c, d] = addr.ip().octets();
        let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: addr.port(), address: (a, b, c, d) });
        socket.start_connect(&network, remote)?;
        socket.subscribe().block();
        socket.finish_connect()?;
        Ok("connected")
    };
    Ok(Probe::from(connect()))
}

#[derive(Deserialize)]
struct Url {
    url: String,
}

fn http_request(input: Url) -> Result<Probe, Error> {
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let rest = input
        .url
        .strip_prefix("http://")
        .ok_or_else(|| Error::invalid_input("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let response = match wasi::http::outgoing_handler::handle(request, None) {
        Err(e) => return Ok(Probe::from::<(), _>(Err(e))),
        Ok(future) => {
            future.subscribe().block();
            future.get()
        }
    };
    Ok(match response {
        Some(Ok(Ok(response))) => Probe { succeeded: true, detail: format!("status {}", response.status()) },
        Some(Ok(Err(e))) => Probe::from::<(), _>(Err(e)),
        other => Probe { succeeded: false, detail: format!("{other:?}") },
    })
}

corral_sdk::agent! {
    description: "Misbehaves on purpose, to test the sandbox",
    actions: {
        spin: "Loop forever",
        hog_memory: "Allocate memory until stopped",
        recurse: "Recurse until the stack overflows",
        panic: "Panic",
        unreachable: "Execute an unreachable instruction",
        fail: "Return a retryable agent error",
        huge_output: "Return a string of the given size",
        flood_logs: "Log 1 KiB lines forever",
        print: "Write to stdout and stderr",
        print_flood: "Print to stdout forever",
        sleep: "Sleep in a host call",
        burn: "Compute for a given number of iterations",
        read_file: "Try to read a host file",
        read_env: "Try to read an environment variable",
        open_socket: "Try to open a TCP connection",
        http_request: "Try an outbound HTTP request",
    }
}
