//! Agents written in Python (componentize-py) and TypeScript (componentize-js), built
//! with `corral build` from `plugins/python` and `plugins/js`, run through `corral run`
//! and `corral serve`: what they answer, each way they can fail, each capability
//! denied and granted, and scaffolds made by `corral new`.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::guests::{Lang, cache_dir, component, toolchains};
use corral_tests::harness::corral_bin;
use corral_tests::plugins::TEXT_STATS;
use corral_tests::providers::{ModelServer, Provider};
use corral_tests::upstream::Upstream;
use serde_json::{Value, json};

const LANGS: [Lang; 2] = [Lang::Python, Lang::Js];

crate::on_both_backends!(guests_upload_invoke_and_keep_records_through_the_api);

/// `corral run COMPONENT --action ACTION --input INPUT EXTRA… --json`: the record.
fn run(component: &Path, action: &str, input: Value, extra: &[&str]) -> Value {
    let out = Command::new(corral_bin())
        .arg("run")
        .arg(component)
        .args(["--action", action, "--input", &input.to_string(), "--json"])
        .args(extra)
        .arg("--cache-dir")
        .arg(cache_dir())
        // Only the first run of a component compiles it; a debug build of the compiler
        // on a busy machine can take longer than the default 60 s.
        .args(["--compile-timeout", "600s"])
        .output()
        .expect("corral runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{action}: no JSON record ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn output(record: &Value) -> Value {
    assert_eq!(record["outcome"], "succeeded", "{record:#}");
    serde_json::from_str(record["output"].as_str().unwrap()).unwrap()
}

/// The same JSON with every number as a float: `0` from JavaScript is `0.0` from Rust.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

fn error_code(record: &Value) -> &str {
    record["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {record:#}"))
}

fn logs(record: &Value) -> String {
    record["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "[{}] {}\n",
                l["level"].as_str().unwrap(),
                l["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn python_and_typescript_text_stats_answer_as_the_rust_agent_does() {
    let texts = [
        "",
        "Hi there.",
        "Don't stop -- state-of-the-art 'quoted' 1,000.5 x.5",
        "Pi is 3.14. Really?! Yes\nline two\n",
        "The the THE cat; a cat, and the dog… Dogs don’t bark!",
    ];
    let rust = Path::new(TEXT_STATS);
    let guests: Vec<PathBuf> = LANGS.iter().map(|&l| component(l, "text-stats")).collect();
    for text in texts {
        for (action, input) in [
            ("stats", json!({ "text": text })),
            ("top_words", json!({ "text": text, "limit": 3 })),
            (
                "top_words",
                json!({ "text": text, "ignore_stopwords": false }),
            ),
        ] {
            let expected = numbers_as_floats(output(&run(rust, action, input.clone(), &[])));
            for guest in &guests {
                assert_eq!(
                    numbers_as_floats(output(&run(guest, action, input.clone(), &[]))),
                    expected,
                    "{} {action} {text:?}",
                    guest.display()
                );
            }
        }
    }
}

/// The TypeScript examples type-check against the SDK's declarations (esbuild, which
/// builds them, only strips types).
#[test]
fn the_typescript_examples_type_check_against_the_sdk() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/js");
    let out = Command::new(toolchains().join("js/node_modules/.bin/tsc"))
        .arg("-p")
        .arg(&plugins)
        .output()
        .expect("tsc runs");
    assert!(
        out.status.success(),
        "tsc -p plugins/js:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_way_a_guest_fails_is_recorded_as_what_stopped_it() {
    for lang in LANGS {
        let probe = component(lang, "probe");
        let stats = component(lang, "text-stats");
        let at = |what: &str| format!("{lang:?} {what}");

        let failed = run(
            &probe,
            "fail",
            json!({ "code": "no_stock", "message": "none left", "retryable": true }),
            &[],
        );
        assert_eq!(failed["outcome"], "agent_error", "{}", at("fail"));
        assert_eq!(
            failed["error"],
            json!({ "code": "no_stock", "message": "none left", "retryable": true })
        );

        // Typed input: a field of the wrong type is named.
        let invalid = run(&stats, "stats", json!({ "text": 5 }), &[]);
        assert_eq!(invalid["outcome"], "invalid_input", "{}", at("invalid"));
        assert!(
            invalid["error"]["message"]
                .as_str()
                .unwrap()
                .contains("input.text"),
            "{invalid:#}"
        );
        let missing = run(&stats, "stats", json!({}), &[]);
        assert_eq!(missing["outcome"], "invalid_input", "{}", at("missing"));
        let unknown = run(&stats, "no_such_action", json!({}), &[]);
        assert_eq!(error_code(&unknown), "unknown_action", "{}", at("unknown"));

        // An exception the agent does not handle: a clean error, the stack in the log.
        let crashed = run(&probe, "crash", json!({}), &[]);
        assert_eq!(crashed["outcome"], "agent_error", "{}", at("crash"));
        assert_eq!(error_code(&crashed), "uncaught_exception");
        let expected = match lang {
            Lang::Python => "ZeroDivisionError",
            Lang::Js => "TypeError",
        };
        assert!(
            crashed["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{crashed:#}"
        );
        assert!(
            logs(&crashed).contains("[error] uncaught exception in action"),
            "{}",
            logs(&crashed)
        );

        // A runaway loop: stopped by fuel, or by the clock when fuel is plentiful.
        let spun = run(&probe, "spin", json!({}), &["--fuel", "5e7"]);
        assert_eq!(spun["outcome"], "fuel_exhausted", "{}", at("spin"));
        assert_eq!(spun["usage"]["fuel"], 50_000_000);
        let timed = run(
            &probe,
            "spin",
            json!({}),
            &["--fuel", "1e13", "--timeout", "300ms"],
        );
        assert_eq!(timed["outcome"], "timed_out", "{}", at("spin timeout"));

        // A memory hog: stopped by the memory limit, and the record says so.
        let hog = run(&probe, "hog", json!({}), &["--memory", "48MiB"]);
        assert_eq!(
            hog["outcome"],
            "memory_limit_exceeded",
            "{}: {hog:#}",
            at("hog")
        );
        assert!(hog["usage"]["peak_memory_bytes"].as_u64().unwrap() <= 48 << 20);

        // logging / print / console reach the host's log at their levels.
        let chatty = run(&probe, "chatter", json!({}), &[]);
        let lines = logs(&chatty);
        let (warned, said) = match lang {
            Lang::Python => ("[warn] a warning from logging", "[info] a line from print"),
            Lang::Js => (
                "[warn] a warning from console.warn",
                "[info] a line from console.log",
            ),
        };
        assert!(
            lines.contains(warned) && lines.contains(said),
            "{lang:?}: {lines}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_capabilities_fail_at_call_time_and_granted_ones_work() {
    let upstream = Upstream::start().await;
    let url = upstream.url("/hello");
    let rule = upstream.rule();
    let call_text_stats = format!("text-stats={TEXT_STATS}");
    // A model provider on 127.0.0.1, and a catalogue with one alias, `fast`.
    let provider = ModelServer::start(Provider::OpenAi, "sk-guests-test").await;
    let models_dir = tempfile::tempdir().unwrap();
    let models = models_dir.path().join("models.json");
    let catalogue = json!({
        "providers": { "local": { "kind": "openai", "base_url": provider.url(), "api_key": "sk-guests-test" } },
        "models": { "fast": { "provider": "local", "model": "fast",
                              "input_per_million": "0.15", "output_per_million": "0.60" } },
    });
    std::fs::write(&models, catalogue.to_string()).unwrap();
    let models = models.to_str().unwrap();
    for lang in LANGS {
        let probe = component(lang, "probe");
        let denied = |action: &str, input: Value| {
            let record = run(&probe, action, input, &[]);
            assert_eq!(
                record["outcome"], "agent_error",
                "{lang:?} {action}: {record:#}"
            );
            record
        };
        let kv = json!({ "key": "k", "value": "v" });
        assert_eq!(error_code(&denied("kv_roundtrip", kv.clone())), "kv_denied");
        assert_eq!(
            output(&run(&probe, "kv_roundtrip", kv, &["--kv"])),
            json!({ "value": "v" })
        );

        let secret = json!({ "name": "TOKEN" });
        assert_eq!(
            error_code(&denied("secret", secret.clone())),
            "config_denied"
        );
        assert_eq!(
            output(&run(
                &probe,
                "secret",
                secret,
                &["--secret", "TOKEN=s3cret"]
            )),
            json!({ "length": 6 })
        );

        let fetch = json!({ "url": url });
        let refused = denied("fetch", fetch.clone());
        // Python sees the wasi:http code; JavaScript's fetch only a network error.
        let code = match lang {
            Lang::Python => "http_request_denied",
            Lang::Js => "http_request_failed",
        };
        assert_eq!(error_code(&refused), code);
        assert_eq!(
            refused["usage"]["http"]["requests_denied"], 1,
            "{refused:#}"
        );
        let fetched = output(&run(&probe, "fetch", fetch, &["--allow-http", &rule]));
        assert_eq!(fetched["status"], 200, "{fetched:#}");

        let call = json!({ "agent": "text-stats", "action": "stats", "input": { "text": "a b" } });
        assert_eq!(error_code(&denied("call", call.clone())), "call_denied");
        assert_eq!(
            output(&run(&probe, "call", call, &["--call", &call_text_stats]))["words"],
            2
        );

        let ask = json!({ "model": "fast", "question": "Is this spam?" });
        let refused = run(&probe, "ask", ask.clone(), &["--llm-config", models]);
        assert_eq!(error_code(&refused), "llm_denied", "{lang:?}: {refused:#}");
        let asked = run(
            &probe,
            "ask",
            ask,
            &["--llm-config", models, "--allow-model", "fast"],
        );
        let answer = output(&asked);
        assert!(
            answer["tokens"].as_u64().unwrap() > 0,
            "{lang:?}: {answer:#}"
        );
        assert_eq!(asked["usage"]["llm"]["calls"], 1, "{asked:#}");
    }
    assert_eq!(
        upstream.hits().len(),
        2,
        "only the granted requests arrived"
    );

    // What only Python can reach: files, the environment and sockets, all denied.
    let probe = component(Lang::Python, "probe");
    let file = run(&probe, "read_file", json!({ "path": "/etc/hostname" }), &[]);
    assert_eq!(error_code(&file), "os_error", "{file:#}");
    assert_eq!(
        output(&run(&probe, "env", json!({}), &[])),
        json!({ "variables": {} })
    );
    let socket = run(
        &probe,
        "connect",
        json!({ "host": "127.0.0.1", "port": upstream.port() }),
        &[],
    );
    assert_eq!(error_code(&socket), "os_error", "{socket:#}");
    assert!(
        socket["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PermissionError"),
        "{socket:#}"
    );
}

/// Copies the compiled artifacts of `components` into a server's data directory, so
/// each server does not compile the same 10–20 MB components again (the cache holds
/// what `corral run` compiled, with the same engine settings).
fn seed_artifacts(app: &TestApp, components: &[&Path]) {
    use sha2::{Digest, Sha256};
    let target = app.data_dir().join("artifacts");
    std::fs::create_dir_all(&target).unwrap();
    for component in components {
        let hash = hex::encode(Sha256::digest(std::fs::read(component).unwrap()));
        for entry in std::fs::read_dir(cache_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&hash)
            {
                std::fs::copy(&path, target.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

async fn guests_upload_invoke_and_keep_records_through_the_api(backend: Backend) {
    let upstream = Upstream::start().await;
    let app = spawn_app(backend).await;
    app.agent_with("text-stats", TEXT_STATS).await;
    for lang in LANGS {
        let (stats, notes, probe) = (
            component(lang, "text-stats"),
            component(lang, "notes"),
            component(lang, "probe"),
        );
        // Compiled once, when built, then shared.
        seed_artifacts(&app, &[&stats, &notes, &probe]);
        let suffix = lang.suffix();
        let (stats_name, notes_name, probe_name) = (
            format!("stats-{suffix}"),
            format!("notes-{suffix}"),
            format!("probe-{suffix}"),
        );
        let uploaded = app.agent_with(&stats_name, stats.to_str().unwrap()).await;
        assert_eq!(
            uploaded["metadata"]["actions"][0]["name"], "stats",
            "{uploaded:#}"
        );
        assert!(
            uploaded["metadata"]["actions"][0]["input_schema"]["properties"]["text"].is_object()
        );
        app.agent_with(&notes_name, notes.to_str().unwrap()).await;
        app.agent_with(&probe_name, probe.to_str().unwrap()).await;

        let ran = app
            .invoke(
                &stats_name,
                ADMIN_KEY,
                json!({ "action": "stats", "input": { "text": "One two. Three!" } }),
            )
            .await
            .ok(200);
        assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
        assert_eq!(ran["output"]["words"], 3);
        assert_eq!(ran["output"]["sentences"], 2);

        // Denied by default, recorded and audited.
        let denied = app
            .invoke(
                &notes_name,
                ADMIN_KEY,
                json!({ "action": "add", "input": { "text": "hi" } }),
            )
            .await
            .ok(200);
        assert_eq!(denied["outcome"], "agent_error", "{denied:#}");
        assert_eq!(denied["error"]["code"], "kv_denied");
        assert_eq!(denied["denials"][0]["capability"], "kv", "{denied:#}");

        // Granted: kv, config and a call to the Rust text-stats agent.
        app.set_policy(
            &notes_name,
            json!({ "grants": { "kv": {}, "agents": { "allow": ["text-stats"] } } }),
        )
        .await;
        app.send(
            reqwest::Method::PUT,
            &format!("/v1/agents/{notes_name}/config"),
            Some(ADMIN_KEY),
            Some(json!({ "values": { "max_chars": "20" } })),
        )
        .await
        .ok(200);
        let added = app
            .invoke(
                &notes_name,
                ADMIN_KEY,
                json!({ "action": "add", "input": { "id": "n1", "text": "Corral runs agents." } }),
            )
            .await
            .ok(200);
        assert_eq!(added["output"], json!({ "id": "n1" }), "{added:#}");
        let too_long = app
            .invoke(
                &notes_name,
                ADMIN_KEY,
                json!({ "action": "add", "input": { "text": "x".repeat(21) } }),
            )
            .await
            .ok(200);
        assert_eq!(too_long["error"]["code"], "too_long", "{too_long:#}");
        let listed = app
            .invoke(
                &notes_name,
                ADMIN_KEY,
                json!({ "action": "list", "input": {} }),
            )
            .await
            .ok(200);
        assert_eq!(
            listed["output"],
            json!({ "notes": [{ "id": "n1", "text": "Corral runs agents." }] })
        );
        let measured = app
            .invoke(
                &notes_name,
                ADMIN_KEY,
                json!({ "action": "stats", "input": { "id": "n1" } }),
            )
            .await
            .ok(200);
        assert_eq!(measured["output"]["words"], 3, "{measured:#}");
        assert_eq!(measured["usage"]["agents"]["calls"], 1);

        // HTTP granted to the upstream only.
        app.set_policy(
            &probe_name,
            json!({ "grants": { "http": { "allow": [upstream.rule()] } } }),
        )
        .await;
        let fetched = app
            .invoke(
                &probe_name,
                ADMIN_KEY,
                json!({ "action": "fetch", "input": { "url": upstream.url("/hello") } }),
            )
            .await
            .ok(200);
        assert_eq!(fetched["output"]["status"], 200, "{fetched:#}");

        // A runaway loop under the agent's fuel limit, kept with what stopped it.
        let spun = app
            .invoke(
                &probe_name,
                ADMIN_KEY,
                json!({ "action": "spin", "limits": { "fuel": 20_000_000 } }),
            )
            .await
            .ok(200);
        assert_eq!(spun["outcome"], "fuel_exhausted", "{spun:#}");
        let id = spun["execution_id"].as_str().unwrap();
        let record = app
            .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
            .await
            .ok(200);
        assert_eq!(record["outcome"], "fuel_exhausted");
        assert_eq!(record["fuel"], 20_000_000);
        let crashed = app
            .invoke(&probe_name, ADMIN_KEY, json!({ "action": "crash" }))
            .await
            .ok(200);
        assert_eq!(
            crashed["error"]["code"], "uncaught_exception",
            "{crashed:#}"
        );
    }
    let executions = app.get("/v1/executions?limit=100", ADMIN_KEY).await.ok(200);
    assert!(
        executions["items"].as_array().unwrap().len() >= 20,
        "{executions:#}"
    );
    app.stop().await;
}

/// A 18 MB Python component compiles for seconds; the server keeps answering meanwhile,
/// and the upload itself succeeds under the default request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_compiles_while_other_requests_are_answered() {
    let python = std::fs::read(component(Lang::Python, "notes")).unwrap();
    // Debug builds of the compiler are slower than release ones: more time to compile.
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.compile_timeout = std::time::Duration::from_secs(300)
    })
    .await;
    app.agent_with("text-stats", TEXT_STATS).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "notes-py" }))
        .await
        .ok(201);
    let upload = app.upload("notes-py", ADMIN_KEY, python);
    let others = async {
        let mut answered = 0;
        for _ in 0..20 {
            let ran = app
                .invoke(
                    "text-stats",
                    ADMIN_KEY,
                    json!({ "action": "stats", "input": { "text": "a b" } }),
                )
                .await
                .ok(200);
            assert_eq!(ran["outcome"], "succeeded");
            app.get("/healthz", ADMIN_KEY).await.ok(200);
            answered += 1;
        }
        answered
    };
    let (uploaded, answered) = tokio::join!(upload, others);
    let uploaded = uploaded.ok(201);
    assert_eq!(uploaded["metadata"]["name"], "notes-py", "{uploaded:#}");
    assert_eq!(answered, 20);
    app.stop().await;
}

/// `corral new` makes a project that `corral build` builds and `corral run` runs, in
/// each language, as its README says.
#[test]
fn new_projects_build_and_run_in_each_language() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, name) in [
        ("python", "hello-py"),
        ("js", "hello-js"),
        ("rust", "hello-rs"),
    ] {
        let project = dir.path().join(name);
        let corral = |args: &[&str], cwd: &Path| {
            let mut command = Command::new(corral_bin());
            command
                .args(args)
                .current_dir(cwd)
                .env("CORRAL_GUEST_TOOLCHAINS", toolchains());
            if lang == "rust" {
                // The Rust agents' build directory: its dependencies are already built.
                command.env(
                    "CARGO_TARGET_DIR",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
                );
            }
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "{lang}: corral {args:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let said = corral(&["new", name, "--lang", lang], dir.path());
        assert!(said.contains("corral build"), "{said}");
        assert!(project.join("corral.toml").exists() && project.join("README.md").exists());
        let built = corral(&["build"], &project);
        assert!(built.contains(&format!("dist/{name}.wasm")), "{built}");
        let cache = cache_dir();
        let ran = corral(
            &[
                "run",
                &format!("dist/{name}.wasm"),
                "--action",
                "greet",
                "--input",
                r#"{"name":"Ada"}"#,
                "--cache-dir",
                cache.to_str().unwrap(),
                "--compile-timeout",
                "600s",
            ],
            &project,
        );
        let answer: Value = serde_json::from_str(&ran).unwrap();
        assert_eq!(answer, json!({ "greeting": "Hello, Ada!" }), "{lang}");
    }

    // Refusals: an existing directory, a bad name, no project, a missing toolchain.
    let status = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(corral_bin())
            .args(args)
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        status(&["new", "hello-py", "--lang", "python"], &[]).0,
        Some(2)
    );
    assert_eq!(status(&["new", "Bad Name"], &[]).0, Some(2));
    let (code, said) = status(&["build"], &[]);
    assert_eq!(code, Some(2));
    assert!(said.contains("corral new"), "{said}");
    let (code, said) = status(
        &["build", "--dir", "hello-py"],
        &[
            ("PATH", "/nonexistent"),
            ("CORRAL_GUEST_TOOLCHAINS", "/nonexistent"),
        ],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("pip install componentize-py=="), "{said}");
}
