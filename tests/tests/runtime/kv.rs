//! Key-value state through `corral:agent/kv`: denied by default, granted with limits,
//! metered exactly, and kept across invocations (in memory, and in `corral run`'s
//! `--kv-file`), driven by the real `notes` agent.

use std::process::Command;
use std::sync::Arc;

use chrono::Utc;
use corral_host::limits::Limits;
use corral_host::policy::{Grants, KvGrant};
use corral_host::quota::clock::ManualClock;
use corral_host::runtime::capabilities::kv::{KvStore, KvUsage, MemoryKvStore};
use corral_host::runtime::{DenialReason, Execution, InvokeRequest, Outcome, Providers, Runtime};
use corral_tests::harness::{corral_bin, load, runtime};
use corral_tests::plugins::NOTES;
use serde_json::{Value, json};

fn kv_grants(max_value_bytes: u64, max_keys: u64, max_total_bytes: u64) -> Grants {
    Grants {
        kv: Some(KvGrant {
            max_value_bytes,
            max_keys,
            max_total_bytes,
        }),
        ..Grants::default()
    }
}

/// Runs `notes` once with `grants`, served by `store`.
async fn notes(
    runtime: &Runtime,
    action: &str,
    input: Value,
    grants: &Grants,
    store: Option<&Arc<MemoryKvStore>>,
) -> Execution {
    let agent = load(runtime, NOTES).await;
    let mut request = InvokeRequest::new(action, input.to_string(), Limits::default())
        .with_grants(grants.clone());
    request.providers = Providers {
        kv: store.map(|s| s.clone() as _),
        ..Providers::default()
    };
    runtime
        .invoke(&agent, request)
        .await
        .expect("the host sets up the run")
}

fn output(execution: &Execution) -> Value {
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    serde_json::from_str(execution.output.as_deref().unwrap()).unwrap()
}

/// The agent error's code and message, asserting the run ended with one.
fn error(execution: &Execution) -> (&str, &str) {
    assert_eq!(execution.outcome, Outcome::AgentError, "{execution:#?}");
    let error = execution.error.as_ref().unwrap();
    (&error.code, &error.message)
}

/// The bytes `notes` stores for a note: its JSON.
fn note_bytes(id: &str, text: &str) -> u64 {
    json!({ "id": id, "text": text }).to_string().len() as u64
}

fn keys(store: &MemoryKvStore) -> Vec<String> {
    store.entries().into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_every_call_is_denied_and_listed() {
    let runtime = runtime();
    let store = Arc::new(MemoryKvStore::new());
    let execution = notes(
        &runtime,
        "add",
        json!({ "id": "a", "text": "hello" }),
        &Grants::default(),
        Some(&store),
    )
    .await;
    let (code, message) = error(&execution);
    assert_eq!(code, "kv_denied");
    assert_eq!(
        message,
        "key-value state is not granted: this agent has no kv grant"
    );
    assert_eq!(
        execution.usage.kv,
        KvUsage {
            denied: 1,
            ..KvUsage::default()
        }
    );
    assert_eq!(execution.denials.len(), 1, "{:#?}", execution.denials);
    let denial = &execution.denials[0];
    assert_eq!(
        (denial.capability.as_str(), denial.target.as_str()),
        ("kv", "set")
    );
    assert_eq!(denial.reason, DenialReason::NotGranted);
    assert!(keys(&store).is_empty(), "nothing may be stored");

    // A grant with no store behind it is no better.
    let execution = notes(
        &runtime,
        "count",
        json!({}),
        &kv_grants(100, 10, 1000),
        None,
    )
    .await;
    assert_eq!(error(&execution).0, "kv_denied");
    assert_eq!(execution.denials[0].target, "list-keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_agent_keeps_state_across_invocations_and_every_call_is_counted() {
    let runtime = runtime();
    let store = Arc::new(MemoryKvStore::new());
    let grants = kv_grants(1024, 100, 10_000);
    let run = |action: &'static str, input: Value| {
        let (runtime, grants, store) = (&runtime, &grants, &store);
        async move { notes(runtime, action, input, grants, Some(store)).await }
    };

    let added = run("add", json!({ "id": "a", "text": "hello" })).await;
    assert_eq!(output(&added), json!({ "id": "a" }));
    let a = note_bytes("a", "hello");
    assert_eq!(a, 25);
    assert_eq!(
        added.usage.kv,
        KvUsage {
            writes: 1,
            bytes_written: a,
            ..KvUsage::default()
        }
    );
    assert!(added.denials.is_empty());

    let got = run("get", json!({ "id": "a" })).await;
    assert_eq!(output(&got), json!({ "id": "a", "text": "hello" }));
    assert_eq!(
        got.usage.kv,
        KvUsage {
            reads: 1,
            bytes_read: a,
            ..KvUsage::default()
        }
    );

    run("add", json!({ "id": "b1", "text": "second" })).await;
    run("add", json!({ "id": "b2", "text": "third" })).await;
    assert_eq!(keys(&store), ["note/a", "note/b1", "note/b2"]);

    let listed = run("list", json!({})).await;
    assert_eq!(
        output(&listed),
        json!({ "notes": [
            { "id": "a", "text": "hello" },
            { "id": "b1", "text": "second" },
            { "id": "b2", "text": "third" },
        ] })
    );
    assert_eq!(
        listed.usage.kv,
        KvUsage {
            lists: 1,
            reads: 3,
            bytes_read: a + note_bytes("b1", "second") + note_bytes("b2", "third"),
            ..KvUsage::default()
        }
    );
    let prefixed = run("list", json!({ "prefix": "b" })).await;
    assert_eq!(output(&prefixed)["notes"].as_array().unwrap().len(), 2);
    let counted = run("count", json!({ "prefix": "b2" })).await;
    assert_eq!(output(&counted), json!({ "count": 1 }));

    // Replacing a note keeps one key.
    run("add", json!({ "id": "a", "text": "hello again" })).await;
    assert_eq!(
        output(&run("get", json!({ "id": "a" })).await)["text"],
        "hello again"
    );

    let deleted = run("delete", json!({ "id": "a" })).await;
    assert_eq!(output(&deleted), json!({ "deleted": true }));
    assert_eq!(
        deleted.usage.kv,
        KvUsage {
            deletes: 1,
            ..KvUsage::default()
        }
    );
    let again = run("delete", json!({ "id": "a" })).await;
    assert_eq!(output(&again), json!({ "deleted": false }));
    let missing = run("get", json!({ "id": "a" })).await;
    assert_eq!(error(&missing), ("not_found", "there is no note \"a\""));
    assert_eq!(
        output(&run("count", json!({})).await),
        json!({ "count": 2 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_are_listed_page_by_page() {
    let runtime = runtime();
    let store = Arc::new(MemoryKvStore::new());
    let grants = kv_grants(1024, 1000, 1 << 20);
    for i in 0..250 {
        KvStore::set(
            store.as_ref(),
            &format!("note/{i:03}"),
            br#"{"id":"x","text":""}"#,
            None,
            grants.kv.as_ref().unwrap(),
        )
        .await
        .unwrap();
    }
    let counted = notes(&runtime, "count", json!({}), &grants, Some(&store)).await;
    assert_eq!(output(&counted), json!({ "count": 250 }));
    // Pages of 100: 100, 100, 50 (a short page ends the listing).
    assert_eq!(counted.usage.kv.lists, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_ttl_is_gone_once_it_expires() {
    let runtime = runtime();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = Arc::new(MemoryKvStore::with_clock(clock.clone()));
    let grants = kv_grants(1024, 100, 10_000);
    let added = notes(
        &runtime,
        "add",
        json!({ "id": "brief", "text": "soon gone", "ttl_ms": 1500 }),
        &grants,
        Some(&store),
    )
    .await;
    output(&added);
    notes(
        &runtime,
        "add",
        json!({ "id": "kept", "text": "stays" }),
        &grants,
        Some(&store),
    )
    .await;
    clock.advance(chrono::Duration::milliseconds(1499));
    let before = notes(
        &runtime,
        "get",
        json!({ "id": "brief" }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(output(&before)["text"], "soon gone");

    clock.advance(chrono::Duration::milliseconds(1));
    let after = notes(
        &runtime,
        "get",
        json!({ "id": "brief" }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(error(&after).0, "not_found");
    let listed = notes(&runtime, "list", json!({}), &grants, Some(&store)).await;
    assert_eq!(
        output(&listed),
        json!({ "notes": [{ "id": "kept", "text": "stays" }] })
    );
    assert_eq!(keys(&store), ["note/kept"]);

    // A TTL of zero is refused, not stored as already expired.
    let zero = notes(
        &runtime,
        "add",
        json!({ "id": "z", "text": "", "ttl_ms": 0 }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(error(&zero).0, "kv_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_refuses_the_set_and_stores_nothing() {
    let runtime = runtime();
    let a = 6 + note_bytes("a", "hello"); // "note/a" and its value: 31 bytes
    assert_eq!(a, 31);

    // A value larger than max_value_bytes.
    let store = Arc::new(MemoryKvStore::new());
    let grants = kv_grants(40, 10, 1000);
    let big = notes(
        &runtime,
        "add",
        json!({ "id": "big", "text": "x".repeat(30) }),
        &grants,
        Some(&store),
    )
    .await;
    let (code, message) = error(&big);
    assert_eq!(code, "kv_limit_exceeded");
    assert_eq!(
        message,
        "the value is 52 bytes; the grant allows at most 40 (max_value_bytes)"
    );
    assert_eq!(
        big.usage.kv,
        KvUsage {
            refused: 1,
            ..KvUsage::default()
        }
    );
    assert!(big.denials.is_empty(), "a limit is not a denial");
    assert!(keys(&store).is_empty());

    // One key more than max_keys.
    let grants = kv_grants(40, 2, 1000);
    for id in ["a", "b"] {
        output(
            &notes(
                &runtime,
                "add",
                json!({ "id": id, "text": "hello" }),
                &grants,
                Some(&store),
            )
            .await,
        );
    }
    let third = notes(
        &runtime,
        "add",
        json!({ "id": "c", "text": "hello" }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(
        error(&third),
        (
            "kv_limit_exceeded",
            "the agent already holds 2 keys; the grant allows at most 2 (max_keys)"
        )
    );
    assert_eq!(keys(&store), ["note/a", "note/b"]);
    // Replacing an existing key is not one more.
    output(
        &notes(
            &runtime,
            "add",
            json!({ "id": "b", "text": "howdy" }),
            &grants,
            Some(&store),
        )
        .await,
    );

    // Past max_total_bytes, keys and values together: 31 + 31 + 31 > 80.
    let grants = kv_grants(40, 10, 80);
    let over = notes(
        &runtime,
        "add",
        json!({ "id": "c", "text": "hello" }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(
        error(&over),
        (
            "kv_limit_exceeded",
            "the agent's keys and values would take 93 bytes; the grant allows at most 80 (max_total_bytes)"
        )
    );
    assert_eq!(keys(&store), ["note/a", "note/b"]);
    assert_eq!(
        store.entries()["note/b"].value,
        br#"{"id":"b","text":"howdy"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_overlong_key_is_invalid() {
    let runtime = runtime();
    let store = Arc::new(MemoryKvStore::new());
    let grants = kv_grants(4096, 10, 1 << 20);
    // "note/" and 508 bytes: 513, one past the limit.
    let long = notes(
        &runtime,
        "add",
        json!({ "id": "x".repeat(508), "text": "" }),
        &grants,
        Some(&store),
    )
    .await;
    assert_eq!(
        error(&long),
        (
            "kv_invalid_key",
            "the key is 513 bytes; keys are at most 512"
        )
    );
    assert_eq!(long.usage.kv.refused, 1);
    let longest = notes(
        &runtime,
        "add",
        json!({ "id": "x".repeat(507), "text": "" }),
        &grants,
        Some(&store),
    )
    .await;
    output(&longest);
    assert_eq!(keys(&store), [format!("note/{}", "x".repeat(507))]);
}

fn corral(args: &[&str]) -> std::process::Output {
    let cache = std::env::temp_dir().join(format!("corral-cli-test-cache-{}", std::process::id()));
    Command::new(corral_bin())
        .args(args)
        .env("CORRAL_CACHE_DIR", cache)
        .output()
        .expect("corral runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn corral_run_denies_kv_unless_asked_and_keeps_it_in_a_kv_file() {
    let denied = corral(&["run", NOTES, "--action", "count"]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    let stderr = text(&denied.stderr);
    assert!(stderr.contains("kv_denied"), "{stderr}");
    assert!(
        stderr.contains("[denied] kv list-keys (not_granted): this agent has no kv grant"),
        "{stderr}"
    );

    // Without a file, state lasts for one run.
    let add = r#"{"id": "a", "text": "hello"}"#;
    let alone = corral(&["run", NOTES, "--action", "add", "--input", add, "--kv"]);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    assert!(
        text(&alone.stderr).contains("kv: 0 reads (0 B) · 1 writes (25 B)"),
        "{}",
        text(&alone.stderr)
    );
    let fresh = corral(&["run", NOTES, "--action", "count", "--kv"]);
    assert_eq!(text(&fresh.stdout).trim(), "{\n  \"count\": 0\n}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.json");
    let file = file.to_str().unwrap();
    let first = corral(&[
        "run",
        NOTES,
        "--action",
        "add",
        "--input",
        add,
        "--kv",
        "--kv-file",
        file,
    ]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let saved: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(
        saved["entries"]["note/a"]["value"], "eyJpZCI6ImEiLCJ0ZXh0IjoiaGVsbG8ifQ==",
        "base64 of the note's JSON"
    );
    let second = corral(&[
        "run",
        NOTES,
        "--action",
        "get",
        "--input",
        r#"{"id": "a"}"#,
        "--kv",
        "--kv-file",
        file,
        "--json",
    ]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let record: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(record["output"], r#"{"id":"a","text":"hello"}"#);
    assert_eq!(record["usage"]["kv"]["reads"], 1);
    assert_eq!(record["usage"]["kv"]["bytes_read"], 25);

    // The grant's limits apply to local runs too.
    let small = corral(&[
        "run",
        NOTES,
        "--action",
        "add",
        "--input",
        r#"{"id": "b", "text": "hello"}"#,
        "--kv",
        "--kv-file",
        file,
        "--kv-max-keys",
        "1",
    ]);
    assert_eq!(small.status.code(), Some(1));
    assert!(text(&small.stderr).contains("kv_limit_exceeded"));
    let count = corral(&["run", NOTES, "--action", "count", "--kv", "--kv-file", file]);
    assert_eq!(text(&count.stdout).trim(), "{\n  \"count\": 1\n}");
}

#[test]
fn corral_run_refuses_kv_flags_that_make_no_sense() {
    let no_grant = corral(&["run", NOTES, "--action", "count", "--kv-file", "x.json"]);
    assert_eq!(no_grant.status.code(), Some(2));
    assert!(
        text(&no_grant.stderr).contains("--kv"),
        "{}",
        text(&no_grant.stderr)
    );

    let zero = corral(&[
        "run",
        NOTES,
        "--action",
        "count",
        "--kv",
        "--kv-max-keys",
        "0",
    ]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        text(&zero.stderr).contains("--kv-max-keys must be at least 1"),
        "{}",
        text(&zero.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, "not json").unwrap();
    let bad = corral(&[
        "run",
        NOTES,
        "--action",
        "count",
        "--kv",
        "--kv-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("is not a kv file"),
        "{}",
        text(&bad.stderr)
    );
}
