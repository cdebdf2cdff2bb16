//! The documents stay true, checked against the code and a real `corral serve` on
//! SQLite:
//!
//! - `docs/walkthrough.sh` runs to the end, twice, and `docs/API.md` shows its commands
//!   as they are;
//! - the OpenAPI document the server serves (generated from the handlers: a route
//!   registered with utoipa-axum's `routes!` cannot be missing from it) passes a real
//!   OpenAPI validator, documents routes that exist, lists every error code, agrees
//!   with `docs/API.md`'s tables, and a TypeScript client generated from it calls the
//!   server;
//! - the facts the docs repeat from the code and that a test can read mechanically —
//!   environment variables, the paths they cite, the default interruption mechanism,
//!   the memories a component may have — match it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::guests::toolchains;
use corral_tests::harness::corral_bin;
use corral_tests::plugins::TEXT_STATS;
use serde_json::Value;

const KEY: &str = "crl_docs_test_bootstrap_key_0123456789abcdef";

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
            // Every route is asked once without a key: more failures than the default
            // burst of one address allows.
            .env("CORRAL_AUTH_FAILURE_BURST", "1000")
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

/// The document the server serves, and that server.
async fn served_document() -> (Server, Value) {
    let server = Server::start().await;
    let response = client()
        .get(format!("{}/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("the document is JSON");
    (server, doc)
}

/// Every route module registers its routes through utoipa-axum's `routes!`, which
/// puts each handler's operation in the document; axum's own `.route(…)` would add a
/// route the document does not show. And the API merges every route module.
#[test]
fn every_route_is_registered_with_its_operation() {
    let api = workspace_root().join("host/src/api");
    let modules: Vec<String> = std::fs::read_to_string(api.join("routes/mod.rs"))
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_string())
        .collect();
    assert!(modules.len() > 10, "read no route modules: {modules:?}");
    let assembly = std::fs::read_to_string(api.join("mod.rs")).unwrap();
    let documented = assembly
        .split("fn api_routes(")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("host/src/api/mod.rs has `fn api_routes(`");
    for module in &modules {
        assert!(
            documented.contains(&format!("routes::{module}::router()")),
            "api_routes does not merge routes::{module}"
        );
        let file = api.join(format!("routes/{module}.rs"));
        let source = std::fs::read_to_string(&file).unwrap();
        assert!(
            source.contains("OpenApiRouter::new()") && source.contains("routes!("),
            "{}: routes are registered with `OpenApiRouter::new().routes(routes!(…))`",
            file.display()
        );
        for shape in [".route(", ".route_service(", ".nest_service("] {
            assert!(
                !source.contains(shape),
                "{}: `{shape}` adds a route the OpenAPI document does not show; use `routes!`",
                file.display()
            );
        }
        assert_eq!(
            source.matches("Router::new()").count(),
            source.matches("OpenApiRouter::new()").count(),
            "{}: an axum `Router` adds routes the OpenAPI document does not show",
            file.display()
        );
    }
    for shape in [".route(", ".route_service(", ".nest_service("] {
        assert!(
            !documented.contains(shape),
            "api_routes: `{shape}` adds a route the OpenAPI document does not show"
        );
    }
}

#[tokio::test]
async fn the_served_document_describes_routes_that_exist() {
    let (server, doc) = served_document().await;
    let http = client();

    // OpenAPI 3.1, no dangling references.
    assert_eq!(doc["openapi"], "3.1.0");
    let mut dangling = Vec::new();
    dangling_refs(&doc, &doc, &mut dangling);
    assert!(dangling.is_empty(), "dangling $refs: {dangling:?}");

    // One operation per annotated handler: none is left out of the routers.
    let annotated: usize = std::fs::read_dir(workspace_root().join("host/src/api/routes"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .map(|source| source.matches("#[utoipa::path(").count())
        .sum();
    assert_eq!(
        operations(&doc).len(),
        annotated,
        "the document and the `#[utoipa::path]` handlers disagree"
    );
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/agents/{name}/invoke"),
        ("DELETE", "/v1/agents/{name}/config/{key}"),
        ("PUT", "/v1/agents/{name}/secrets/{secret}"),
    ] {
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{method} {path} is not in the document"
        );
    }

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
        assert!(
            responses.contains_key("default"),
            "{name} documents no default response"
        );
        let public = PUBLIC.contains(&path.as_str());
        assert_eq!(
            responses.contains_key("401"),
            !public,
            "{name}: every operation but {PUBLIC:?} documents 401"
        );
        // `[{}]`: no key needed; without `security`, the document's `apiKey` applies.
        assert_eq!(
            operation.get("security") == Some(&serde_json::json!([{}])),
            public,
            "{name}: exactly the public operations need no key"
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

/// The error codes a response's description lists (`… Codes: `a`, `b`.`).
fn listed_codes(description: &str) -> BTreeSet<String> {
    description
        .split("Codes:")
        .skip(1)
        .flat_map(|list| list.split('`').skip(1).step_by(2))
        .map(str::to_string)
        .collect()
}

/// Every response object of the document: the shared ones and each operation's own.
fn responses(doc: &Value) -> Vec<&Value> {
    let shared = doc["components"]["responses"]
        .as_object()
        .into_iter()
        .flat_map(|map| map.values());
    let own = operations(doc)
        .into_iter()
        .flat_map(|(_, _, operation)| operation["responses"].as_object())
        .flat_map(|map| map.values());
    shared.chain(own).collect()
}

/// The codes of `docs/API.md`'s `### Error codes` table.
fn api_doc_error_codes() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/API.md")).unwrap();
    let table = doc
        .split("### Error codes")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/API.md has a `### Error codes` section");
    table
        .lines()
        .filter(|line| line.starts_with("| ") && line.contains('`'))
        .filter_map(|line| line.split('|').nth(2))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_document_lists_every_error_code_and_each_response_names_its_own() {
    let (_server, doc) = served_document().await;
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let codes: BTreeSet<String> = schema["enum"]
        .as_array()
        .expect("ErrorCode is an enum of strings")
        .iter()
        .map(|code| code.as_str().unwrap().to_string())
        .collect();
    assert!(codes.contains("not_found") && codes.len() > 40, "{codes:?}");
    let detail = doc["components"]["schemas"]["ErrorDetail"].to_string();
    assert!(
        detail.contains("#/components/schemas/ErrorCode"),
        "an error's `code` is an ErrorCode: {detail}"
    );

    let mut documented = BTreeSet::new();
    for response in responses(&doc) {
        let description = response["description"].as_str().unwrap_or_default();
        let listed = listed_codes(description);
        let unknown: Vec<&String> = listed.difference(&codes).collect();
        assert!(
            unknown.is_empty(),
            "a response lists codes that are no ErrorCode: {unknown:?}\n{description}"
        );
        documented.extend(listed);
    }
    let unlisted: Vec<&String> = codes.difference(&documented).collect();
    assert!(
        unlisted.is_empty(),
        "no response of the document says when these codes are answered: {unlisted:?}"
    );
    assert_eq!(
        api_doc_error_codes(),
        codes,
        "docs/API.md's error codes and the document's ErrorCode disagree"
    );
}

/// Paging is the same everywhere and said once, not in the endpoint table.
const PAGING: &[&str] = &["limit", "cursor"];

/// The query parameters the document gives an operation.
fn query_parameters(operation: &Value) -> BTreeSet<String> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The three-digit statuses in a table cell.
fn statuses(cell: &str) -> BTreeSet<String> {
    cell.split(|c: char| !c.is_ascii_digit())
        .filter(|word| word.len() == 3)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_api_doc_lists_exactly_the_documented_operations() {
    let (_server, doc) = served_document().await;
    let api = std::fs::read_to_string(workspace_root().join("docs/API.md")).unwrap();
    let table = api
        .split("### Endpoints")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/API.md has a `### Endpoints` section");
    let mut listed = BTreeSet::new();
    for row in table.lines().filter(|line| line.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let method = cells[1];
        if !HTTP_METHODS.contains(&method.to_lowercase().as_str()) {
            continue; // the header
        }
        let target = cells[2].trim_matches('`');
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let name = format!("{method} {path}");
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "docs/API.md lists {name}, which the document does not"
        );
        listed.insert((method.to_string(), path.to_string()));

        // Its filters: each one the document gives, paging aside.
        let named: BTreeSet<String> = query
            .split('&')
            .map(|param| param.trim_end_matches('=').to_string())
            .filter(|param| !param.is_empty())
            .collect();
        let documented = query_parameters(operation);
        let filters: BTreeSet<String> = documented
            .iter()
            .filter(|p| !PAGING.contains(&p.as_str()))
            .cloned()
            .collect();
        assert!(
            named.is_subset(&documented) && filters.is_subset(&named),
            "docs/API.md's row for {name} names {named:?}; the document has {documented:?}"
        );

        // Its statuses.
        let responses = operation["responses"].as_object().unwrap();
        let successes: BTreeSet<String> = responses
            .keys()
            .filter(|status| status.starts_with('2'))
            .cloned()
            .collect();
        assert_eq!(
            statuses(cells[4]),
            successes,
            "docs/API.md's success statuses for {name}"
        );
        for status in statuses(cells[5]) {
            assert!(
                responses.contains_key(&status),
                "docs/API.md says {name} may answer {status}; the document does not"
            );
        }
    }
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    assert_eq!(
        listed, documented,
        "docs/API.md's endpoint table and the document disagree"
    );

    // The walkthrough's executions step says every parameter, paging included.
    let prose = api
        .split("### 5. List executions")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/API.md has a `### 5. List executions` section");
    for param in query_parameters(&doc["paths"]["/v1/executions"]["get"]) {
        assert!(
            prose.contains(&format!("`{param}`")),
            "docs/API.md's `List executions` does not say the `{param}` parameter"
        );
    }
}

/// Runs `command`, and fails with its output unless it succeeds.
fn run(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_served_document_passes_an_openapi_validator() {
    let (_server, doc) = served_document().await;
    let validator = toolchains().join("python/bin/openapi-spec-validator");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    run(
        Command::new(&validator).arg(&file),
        "openapi-spec-validator",
    );

    // The validator does refuse a broken document: an operation without responses.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = Value::String("none".into());
    std::fs::write(&file, broken.to_string()).unwrap();
    let refused = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        !refused.status.success(),
        "openapi-spec-validator accepted a broken document"
    );
}

/// A TypeScript program over the client openapi-fetch makes from the generated types:
/// it creates an agent and lists agents, and prints what it got.
const CLIENT: &str = r#"import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

declare const process: { env: Record<string, string | undefined> };

const client = createClient<paths>({
  baseUrl: process.env.CORRAL_URL,
  headers: { Authorization: `Bearer ${process.env.CORRAL_KEY}` },
});
const created = await client.POST("/v1/agents", {
  body: { name: "generated-client", description: "made by a generated client" },
});
if (!created.data) {
  throw new Error(`POST /v1/agents: ${created.response.status} ${JSON.stringify(created.error)}`);
}
const listed = await client.GET("/v1/agents", { params: { query: { limit: 10 } } });
if (!listed.data) {
  throw new Error(`GET /v1/agents: ${listed.response.status} ${JSON.stringify(listed.error)}`);
}
const names: string[] = listed.data.items.map((agent) => agent.name);
console.log(JSON.stringify({ status: created.response.status, id: created.data.id, names }));
"#;

#[tokio::test]
async fn a_client_generated_from_the_document_calls_the_server() {
    let (server, doc) = served_document().await;
    let tools = toolchains();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    std::fs::write(at("openapi.json"), doc.to_string()).unwrap();
    run(
        Command::new(tools.join("openapi/node_modules/.bin/openapi-typescript"))
            .arg(at("openapi.json"))
            .arg("--output")
            .arg(at("schema.d.ts")),
        "openapi-typescript",
    );
    std::fs::write(at("client.ts"), CLIENT).unwrap();
    std::fs::write(at("package.json"), r#"{"private": true, "type": "module"}"#).unwrap();
    std::fs::write(
        at("tsconfig.json"),
        r#"{
  "compilerOptions": {
    "target": "es2022",
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "strict": true,
    "lib": ["es2022", "dom"],
    "outDir": "out"
  },
  "files": ["client.ts"]
}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(tools.join("openapi/node_modules"), at("node_modules")).unwrap();
    // The pinned compiler type-checks the program against the generated types.
    run(
        Command::new(tools.join("js/node_modules/.bin/tsc"))
            .arg("-p")
            .arg(dir.path()),
        "tsc",
    );
    let printed = run(
        Command::new("node")
            .arg(at("out/client.js"))
            .env("CORRAL_URL", &server.url)
            .env("CORRAL_KEY", KEY),
        "node out/client.js",
    );
    let answer: Value = serde_json::from_str(printed.trim()).expect("the client prints JSON");
    assert_eq!(answer["status"], 201, "{answer}");
    assert!(
        answer["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{answer}"
    );
    assert_eq!(answer["names"], serde_json::json!(["generated-client"]));
}

/// The Markdown documents: `README.md`, `docs/*.md` and `migrations/README.md`, as
/// (path from the workspace root, text).
fn markdown_docs() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut paths = vec!["README.md".to_string(), "migrations/README.md".to_string()];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            paths.push(format!("docs/{name}"));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path)).unwrap();
            (path, text)
        })
        .collect()
}

/// The environment variables the `corral` subcommands read, from their `--help` (so
/// hidden settings are left out).
fn settings_env_vars() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for subcommand in [
        "serve",
        "run",
        "inspect",
        "agent",
        "tenant",
        "task",
        "version",
        "invoke",
        "execution",
        "audit",
        "costs",
        "usage",
        "key",
        "kv",
        "config",
        "secret",
        "workflow",
        "schedule",
        "build",
    ] {
        let out = Command::new(corral_bin())
            .args([subcommand, "--help"])
            // Whatever this shell sets, the help shows every variable.
            .env_clear()
            .output()
            .expect("corral runs");
        assert!(out.status.success(), "corral {subcommand} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        for rest in help.split("[env: ").skip(1) {
            let name = rest.split([']', '=']).next().unwrap_or_default();
            vars.insert(name.to_string());
        }
    }
    vars
}

#[test]
fn the_docs_name_exactly_the_environment_variables_corral_reads() {
    let settings = settings_env_vars();
    assert!(settings.contains("CORRAL_LISTEN"), "{settings:?}");
    let docs = markdown_docs();
    let mut named = BTreeSet::new();
    for (path, text) in &docs {
        for (at, _) in text.match_indices("CORRAL_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `CORRAL_PRICE_…` stands for every variable with that prefix.
            let known = if name.ends_with('_') {
                settings.iter().any(|s| s.starts_with(&name))
            } else {
                settings.contains(&name)
            };
            assert!(
                known,
                "{path} names {name}, which no `corral` subcommand reads: {settings:?}"
            );
            named.insert(name);
        }
    }
    for setting in &settings {
        let documented =
            named.contains(setting) || docs.iter().any(|(_, text)| text.contains(setting));
        assert!(documented, "{setting} is a setting no document names");
    }
}

#[test]
fn the_paths_the_docs_cite_exist() {
    let root = workspace_root();
    const TOP: &[&str] = &[
        "docs/",
        "host/",
        "tests/",
        "guest-sdk/",
        "plugins/",
        "scripts/",
        "migrations/",
        "wit/",
    ];
    for (path, text) in markdown_docs() {
        let dir = Path::new(&path).parent().unwrap().to_path_buf();
        // `host/src/lib.rs` in code spans: files (a name with an extension), from the
        // root. Templates (`{…}`, `*`, `<…>`, `…`) and directories are left out.
        // Fenced blocks are left out: their backticks would pair up with the prose's.
        let prose: String = text.split("```").step_by(2).collect();
        let spans = prose.split('`').skip(1).step_by(2).filter_map(|span| {
            let file = span.split([':', '#']).next().unwrap_or_default();
            let is_file = TOP.iter().any(|top| file.starts_with(top))
                && Path::new(file).extension().is_some()
                && !file.contains(['{', '*', '<', '…', ' ']);
            is_file.then(|| (file.to_string(), root.join(file)))
        });
        // `[text](../host/src/lib.rs)` links, from the document's directory.
        let links = text.split("](").skip(1).filter_map(|rest| {
            let target = rest.split([')', '#']).next().unwrap_or_default();
            let local = !target.is_empty() && !target.contains("://") && !target.contains(' ');
            local.then(|| (target.to_string(), root.join(&dir).join(target)))
        });
        for (cited, full) in spans.chain(links) {
            assert!(full.exists(), "{path} cites {cited}, which does not exist");
        }
    }
}

/// The paragraphs of a Markdown text, each on one line, so a phrase may wrap.
fn paragraphs(markdown: &str) -> Vec<String> {
    markdown
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The text of `impl Default for {name}` in `source`.
fn default_impl<'a>(source: &'a str, name: &str) -> &'a str {
    source
        .split(&format!("impl Default for {name} {{"))
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .unwrap_or_else(|| panic!("no `impl Default for {name}`"))
}

/// `1000000` as `1,000,000`.
fn with_commas(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_docs_name_the_default_interruption_mechanism() {
    let root = workspace_root();
    let engine = std::fs::read_to_string(root.join("host/src/runtime/engine.rs")).unwrap();
    let default = default_impl(&engine, "Interruption");
    let variant: String = default
        .split("Interruption::")
        .nth(1)
        .expect("the default names an Interruption variant")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect();
    // The fuel interval, if that is the default, as the docs write numbers.
    let interval = default.split("interval:").nth(1).map(|rest| {
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '_')
            .filter(|c| *c != '_')
            .collect();
        with_commas(&digits)
    });
    let others = ["FuelYield", "Epoch"].into_iter().filter(|v| *v != variant);
    let others: Vec<&str> = others.collect();
    for doc in ["docs/RUNTIME.md", "docs/PERFORMANCE.md"] {
        let text = paragraphs(&std::fs::read_to_string(root.join(doc)).unwrap());
        let claim = format!("default is `{variant}`");
        let paragraph = text
            .iter()
            .find(|p| p.contains(&claim))
            .unwrap_or_else(|| panic!("{doc} does not say the {claim} (engine.rs)"));
        if let Some(interval) = &interval {
            assert!(
                paragraph.contains(interval.as_str()),
                "{doc} does not give the default interval, {interval} units of fuel:\n{paragraph}"
            );
        }
        for other in &others {
            assert!(
                !text
                    .iter()
                    .any(|p| p.contains(&format!("default is `{other}`"))),
                "{doc} says the default is `{other}`; engine.rs says `{variant}`"
            );
        }
    }
}

#[test]
fn the_runtime_doc_gives_the_memories_a_component_may_have() {
    let root = workspace_root();
    let engine = std::fs::read_to_string(root.join("host/src/runtime/engine.rs")).unwrap();
    let memories: String = default_impl(&engine, "EngineSettings")
        .split("max_memories_per_component:")
        .nth(1)
        .expect("EngineSettings' default sets max_memories_per_component")
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let doc = paragraphs(&std::fs::read_to_string(root.join("docs/RUNTIME.md")).unwrap());
    assert!(
        doc.iter()
            .any(|p| p.contains(&format!("at most {memories} linear memories"))),
        "docs/RUNTIME.md does not say a component may have at most {memories} linear \
         memories (engine.rs, max_memories_per_component)"
    );
}
