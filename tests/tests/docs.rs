//! The documents stay true, checked against the code and a real `corral serve` on
//! SQLite:
//!
//! - `docs/walkthrough.sh` runs to the end, twice, and `docs/API.md` shows its commands
//!   as they are;
//! - `host/openapi.json` is what the server serves, every operation it documents is
//!   routed, and it documents exactly the operations the route modules declare (read
//!   off `host/src/api/routes/*.rs` and the nesting in `host/src/api/mod.rs` by
//!   [`routed_operations`]): a new route fails this test until it is documented;
//! - the facts the docs repeat from the code and that a test can read mechanically —
//!   environment variables, the paths they cite, the list endpoints' query parameters,
//!   the default interruption mechanism, the memories a component may have — match it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The index in `text` (which follows an opening parenthesis) of the parenthesis that
/// closes it. Route code puts no parentheses in strings, so none are skipped.
fn closing_paren(text: &str) -> usize {
    let mut depth = 0usize;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return at,
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {text:?}");
}

/// The string literal `text` starts with (after whitespace).
fn string_literal(text: &str) -> String {
    let text = text.trim_start();
    let inner = text
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("expected a string literal, not {text:?}"));
    inner[..inner.find('"').expect("a closed string literal")].to_string()
}

/// The names of the calls chained at the top level of `expr`: `get(show).delete(remove)`
/// gives `get` and `delete`; `axum::routing::delete(remove)` gives `delete`.
fn chained_calls(expr: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut name = String::new();
    let mut depth = 0usize;
    for c in expr.chars() {
        match c {
            '(' => {
                if depth == 0 {
                    let last = name.rsplit("::").next().unwrap_or_default();
                    calls.push(last.to_string());
                }
                depth += 1;
            }
            ')' => depth -= 1,
            c if depth == 0 && (c.is_alphanumeric() || c == '_' || c == ':') => name.push(c),
            _ if depth == 0 => name.clear(),
            _ => {}
        }
    }
    calls
}

/// Every operation the router serves, as `(METHOD, path)`, read off the code: each
/// `.route("path", get(…).post(…))` in `host/src/api/routes/<module>.rs`, under the
/// prefixes of the `.nest(…)` calls that `host/src/api/mod.rs`'s `router` merges the
/// module into. Route code in a shape this does not read (a method router with layers,
/// `route_service`, a nest inside a module) fails the test instead of going unseen.
fn routed_operations() -> BTreeSet<(String, String)> {
    let api = workspace_root().join("host/src/api");
    let source = std::fs::read_to_string(api.join("mod.rs")).unwrap();
    let router = source
        .split("pub fn router(")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("host/src/api/mod.rs has `pub fn router(`");
    let nests: Vec<(usize, usize, String)> = router
        .match_indices(".nest(")
        .map(|(at, call)| {
            let args = &router[at + call.len()..];
            (
                at,
                at + call.len() + closing_paren(args),
                string_literal(args),
            )
        })
        .collect();
    let mut prefixes = BTreeMap::new();
    for (at, _) in router.match_indices("routes::") {
        let module = router[at + "routes::".len()..]
            .split("::")
            .next()
            .unwrap()
            .to_string();
        let prefix: String = nests
            .iter()
            .filter(|(start, end, _)| (*start..*end).contains(&at))
            .map(|(_, _, prefix)| prefix.as_str())
            .collect();
        prefixes.insert(module, prefix);
    }
    assert!(
        prefixes.len() > 1,
        "read no route modules off host/src/api/mod.rs"
    );

    let mut operations = BTreeSet::new();
    for (module, prefix) in prefixes {
        let file = api.join(format!("routes/{module}.rs"));
        let source =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for shape in [
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".route_layer(",
        ] {
            assert!(
                !source.contains(shape),
                "{}: `{shape}` is not read by routed_operations; teach it",
                file.display()
            );
        }
        for (at, call) in source.match_indices(".route(") {
            let args = &source[at + call.len()..];
            let args = &args[..closing_paren(args)];
            let path = string_literal(args);
            let (_, methods) = args.split_once(',').expect("`.route(path, methods)`");
            let calls = chained_calls(methods);
            assert!(
                !calls.is_empty(),
                "{}: no method in {methods:?}",
                file.display()
            );
            for method in calls {
                assert!(
                    HTTP_METHODS.contains(&method.as_str()),
                    "{}: cannot read the method router {:?}; teach routed_operations",
                    file.display(),
                    methods.trim()
                );
                operations.insert((method.to_uppercase(), format!("{prefix}{path}")));
            }
        }
    }
    operations
}

#[test]
fn the_routes_are_read_off_the_code() {
    // A few operations of each shape, so the reader above cannot quietly read nothing.
    let routed = routed_operations();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/agents/{name}/invoke"),
        ("DELETE", "/v1/agents/{name}/config/{key}"),
        ("PUT", "/v1/agents/{name}/secrets/{secret}"),
        ("DELETE", "/v1/agents/{name}/secrets/{secret}"),
    ] {
        assert!(
            routed.contains(&(method.to_string(), path.to_string())),
            "{method} {path} not in {routed:?}"
        );
    }
    assert_eq!(
        chained_calls("put(set).delete(remove),\n"),
        ["put", "delete"]
    );
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
    let routed = routed_operations();
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

/// The fields of `struct name` in `source`.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let body = source
        .split(&format!("struct {name} {{"))
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap_or_else(|| panic!("no struct {name}"));
    body.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//") && !line.starts_with("#["))
        .filter_map(|line| line.split_once(':'))
        .map(|(field, _)| field.trim_start_matches("pub ").trim().to_string())
        .collect()
}

#[test]
fn the_api_doc_names_every_query_parameter_of_the_list_endpoints() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
    // Paging is the same everywhere and said once per section, not in the table.
    const PAGING: &[&str] = &["limit", "cursor"];
    for (module, query, endpoint) in [
        ("executions", "ListQuery", "/v1/executions?"),
        ("audit", "ListQuery", "/v1/audit?"),
        ("costs", "CostQuery", "/v1/costs?"),
        ("tasks", "ListQuery", "/v1/tasks?"),
        ("workflows", "ListQuery", "/v1/workflows?"),
    ] {
        let file = root.join(format!("host/src/api/routes/{module}.rs"));
        let fields = struct_fields(&std::fs::read_to_string(file).unwrap(), query);
        assert!(!fields.is_empty(), "{module}.rs: {query} has no fields");
        // The endpoint table: `GET | /v1/executions?agent=&…`.
        let row = doc
            .lines()
            .find(|line| line.contains(&format!("`{endpoint}")))
            .unwrap_or_else(|| panic!("docs/API.md has no row for {endpoint}"));
        let listed: BTreeSet<&str> = row
            .split(endpoint)
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap()
            .split('&')
            .map(|param| param.trim_end_matches('='))
            .collect();
        let filters: BTreeSet<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| !PAGING.contains(f))
            .collect();
        assert_eq!(
            listed, filters,
            "docs/API.md's row for {endpoint} and {module}.rs's {query} disagree"
        );
    }

    // The walkthrough's executions step says every parameter, paging included.
    let fields = struct_fields(
        &std::fs::read_to_string(root.join("host/src/api/routes/executions.rs")).unwrap(),
        "ListQuery",
    );
    let prose = doc
        .split("### 5. List executions")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/API.md has a `### 5. List executions` section");
    for field in fields {
        assert!(
            prose.contains(&format!("`{field}`")),
            "docs/API.md's `List executions` does not say the `{field}` parameter"
        );
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
