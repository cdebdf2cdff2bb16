//! The API's documents stay true, checked against a real `corral serve` on SQLite:
//!
//! - `docs/walkthrough.sh` runs to the end, twice, and `docs/API.md` shows its commands
//!   as they are;
//! - `host/openapi.json` is what the server serves, every operation it documents is
//!   routed, and it documents exactly the operations in [`OPERATIONS`], which is read
//!   off the route modules: a new route fails this test until it is documented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::harness::corral_bin;
use corral_tests::plugins::TEXT_STATS;
use serde_json::Value;

const KEY: &str = "crl_docs_test_bootstrap_key_0123456789abcdef";

/// Every operation the router serves, from `host/src/api/routes/*.rs` (paths under
/// `/v1` are nested there, so the modules spell them without it).
const OPERATIONS: &[(&str, &str)] = &[
    // health.rs
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    // openapi.rs
    ("GET", "/v1/openapi.json"),
    // agents.rs
    ("POST", "/v1/agents"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/agents/{name}"),
    ("DELETE", "/v1/agents/{name}"),
    ("PUT", "/v1/agents/{name}/policy"),
    ("POST", "/v1/agents/{name}/pause"),
    ("POST", "/v1/agents/{name}/resume"),
    // config.rs
    ("GET", "/v1/agents/{name}/config"),
    ("PUT", "/v1/agents/{name}/config"),
    ("DELETE", "/v1/agents/{name}/config/{key}"),
    ("GET", "/v1/agents/{name}/secrets"),
    ("PUT", "/v1/agents/{name}/secrets/{secret}"),
    ("DELETE", "/v1/agents/{name}/secrets/{secret}"),
    // versions.rs
    ("POST", "/v1/agents/{name}/versions"),
    ("GET", "/v1/agents/{name}/versions"),
    ("POST", "/v1/agents/{name}/versions/{version}/activate"),
    // invoke.rs
    ("POST", "/v1/agents/{name}/invoke"),
    // executions.rs
    ("GET", "/v1/executions"),
    ("GET", "/v1/executions/{id}"),
    // usage.rs
    ("GET", "/v1/agents/{name}/usage"),
    ("GET", "/v1/tenants/{id}/usage"),
    ("GET", "/v1/tenants/{id}/policy"),
    ("PUT", "/v1/tenants/{id}/policy"),
    // audit.rs
    ("GET", "/v1/audit"),
    // costs.rs
    ("GET", "/v1/costs"),
    // tenants.rs
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants"),
    // keys.rs
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}"),
    // kv.rs
    ("GET", "/v1/agents/{name}/kv"),
    ("DELETE", "/v1/agents/{name}/kv"),
    ("DELETE", "/v1/agents/{name}/kv/{key}"),
];

/// The operations anyone may call, without a key.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/v1/openapi.json"];

/// The keys of an OpenAPI path item that are operations.
const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// What the router answers for a path it does not know.
const FALLBACK_MESSAGE: &str = "this route was not found";

/// A `corral serve` child process on SQLite in a temporary data directory.
struct Server {
    child: Child,
    url: String,
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(corral_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CORRAL_DATA_DIR", data_dir.path())
            .env("CORRAL_BOOTSTRAP_KEY", KEY)
            // SQLite, whatever the environment says: the walkthrough is zero-setup.
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("corral serve starts");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data_dir: data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", server.url))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "corral serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_walkthrough_runs_against_a_real_server() {
    let server = Server::start().await;
    // Twice: scripts/quickstart runs it on every start, against the same database.
    for run in 1..=2 {
        let output = Command::new("bash")
            .arg("docs/walkthrough.sh")
            .current_dir(workspace_root())
            .env("CORRAL_URL", &server.url)
            .env("CORRAL_KEY", KEY)
            .env("AGENT_WASM", TEXT_STATS)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "docs/walkthrough.sh failed on run {run} ({}):\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// The `sh` code blocks of a Markdown text.
fn sh_blocks(markdown: &str) -> Vec<&str> {
    markdown
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect()
}

#[test]
fn the_api_doc_shows_the_walkthrough_commands() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
    let script = std::fs::read_to_string(root.join("docs/walkthrough.sh")).unwrap();
    let walkthrough = doc
        .split("## Walk through it")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/API.md has a `## Walk through it` section");
    // Every block but the one that runs the whole script is copied from it...
    let blocks: Vec<&str> = sh_blocks(walkthrough)
        .into_iter()
        .filter(|block| !block.contains("bash docs/walkthrough.sh"))
        .collect();
    for block in &blocks {
        assert!(
            script.contains(block),
            "docs/API.md shows a command that docs/walkthrough.sh does not run:\n{block}"
        );
    }
    // ...and every command of the script, from `check` on, is shown.
    let shown = blocks.concat();
    let commands = script
        .split_once("check() {")
        .expect("docs/walkthrough.sh defines check")
        .1
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| !line.starts_with("echo \"walkthrough: all steps passed"));
    for command in commands {
        assert!(
            shown.contains(command),
            "docs/walkthrough.sh runs a command that docs/API.md does not show:\n{command}"
        );
    }
}

/// `(METHOD, path, operation)` for every operation of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item is an object") {
            if HTTP_METHODS.contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone(), operation));
            }
        }
    }
    operations
}

/// Every `$ref` in `value` that does not point into `doc`.
fn dangling_refs(doc: &Value, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let resolves = target
                    .strip_prefix('#')
                    .is_some_and(|pointer| doc.pointer(pointer).is_some());
                if !resolves {
                    out.push(target.clone());
                }
            }
            map.values().for_each(|v| dangling_refs(doc, v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| dangling_refs(doc, v, out)),
        _ => {}
    }
}

/// A concrete URL for a templated path: path parameters name nothing that exists.
fn concrete(path: &str) -> String {
    path.replace("{name}", "no-such-agent")
        .replace("{version}", "0.0.0")
        .replace("{id}", "no-such-id")
        .replace("{key}", "no_such_key")
        .replace("{secret}", "NO_SUCH_SECRET")
}

#[tokio::test]
async fn the_openapi_document_matches_the_server() {
    let file = std::fs::read_to_string(workspace_root().join("host/openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&file).expect("host/openapi.json is JSON");

    let server = Server::start().await;
    let http = client();
    let served = http
        .get(format!("{}/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    let served: Value = serde_json::from_str(&served).expect("the served document is JSON");
    assert!(
        served == doc,
        "the server serves a different document than host/openapi.json: \
         rebuild the binary (`cargo build -p corral-host`)"
    );

    // The document itself: OpenAPI 3.1, no dangling references.
    assert_eq!(doc["openapi"], "3.1.0");
    let mut dangling = Vec::new();
    dangling_refs(&doc, &doc, &mut dangling);
    assert!(dangling.is_empty(), "dangling $refs: {dangling:?}");

    // It documents exactly the routed operations.
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let routed: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        documented, routed,
        "host/openapi.json and the routes disagree"
    );

    // Sanity check of the probe below: an unknown route does get the fallback.
    let unknown = http
        .get(format!("{}/v1/no-such-route", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["error"]["message"], FALLBACK_MESSAGE);

    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            operation_ids.insert(id.to_string()),
            "{name}: operationId {id:?} is missing or not unique"
        );
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no responses"));
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{name} documents no success response"
        );
        let public = PUBLIC.contains(&path.as_str());
        assert_eq!(
            responses.contains_key("401"),
            !public,
            "{name}: every operation but {PUBLIC:?} documents 401"
        );
        assert_eq!(
            operation.get("security") == Some(&Value::Array(Vec::new())),
            public,
            "{name}: exactly the public operations have `security: []`"
        );

        // The route exists: with the admin key, the server answers something other
        // than the fallback or 405, and (unless public) 401 without a key.
        let url = format!("{}{}", server.url, concrete(&path));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http.request(method.clone(), &url).bearer_auth(KEY);
        if let Some(content) = operation["requestBody"]["content"].as_object() {
            if content.contains_key("application/json") {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            } else {
                let media_type = content.keys().next().expect("a request body media type");
                request = request.header("content-type", media_type.as_str());
            }
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{name} is documented but not routed: {body}");
        let fell_back = status == 404
            && serde_json::from_str::<Value>(&body)
                .is_ok_and(|b| b["error"]["message"] == FALLBACK_MESSAGE);
        assert!(!fell_back, "{name} is documented but not routed: {body}");

        if !public {
            let anonymous = http.request(method, &url).send().await.unwrap();
            assert_eq!(anonymous.status(), 401, "{name} answers without a key");
        }
    }
}
