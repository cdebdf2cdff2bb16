//! Reading back: executions with filters and cursors, the audit trail, and costs.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app};
use corral_tests::plugins::{ECHO, HOSTILE};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    executions_are_filtered_and_paged,
    the_audit_trail_records_each_change_with_before_and_after,
    costs_add_up_to_the_executions,
    a_deleted_agents_executions_are_still_found_by_its_name,
    time_filters_include_since_and_exclude_until,
    every_change_is_audited_with_what_it_changed,
    a_guest_that_emits_every_byte_is_recorded_and_charged,
    a_nul_character_in_any_text_the_api_receives_is_refused,
    records_are_purged_when_their_retention_ends,
);

async fn executions_are_filtered_and_paged(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    for i in 0..3 {
        app.invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": { "i": i }, "correlation_id": "batch-a" }),
        )
        .await
        .ok(200);
    }
    app.invoke("hostile", ADMIN_KEY, json!({ "action": "fail" }))
        .await
        .ok(200);

    let all = app.get("/v1/executions", ADMIN_KEY).await.ok(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert!(
        all["items"][0].get("logs").is_none(),
        "lists leave the logs out"
    );
    let by_agent = app
        .get("/v1/executions?agent=echo", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(by_agent["items"].as_array().unwrap().len(), 3);
    let by_outcome = app
        .get("/v1/executions?outcome=agent_error", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(by_outcome["items"][0]["agent"], "hostile");
    let by_correlation = app
        .get("/v1/executions?correlation_id=batch-a&limit=2", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(by_correlation["items"].as_array().unwrap().len(), 2);
    let cursor = by_correlation["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/executions?correlation_id=batch-a&limit=2&cursor={cursor}"),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_cursor").is_none());
    let future = app
        .get("/v1/executions?since=2999-01-01T00:00:00Z", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(future["items"], json!([]));
    let past = app
        .get("/v1/executions?until=2000-01-01T00:00:00Z", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(past["items"], json!([]));
    assert_eq!(
        app.get("/v1/executions?agent=nobody", ADMIN_KEY)
            .await
            .ok(200)["items"],
        json!([])
    );
    app.get("/v1/executions?outcome=exploded", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/executions?since=yesterday", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/executions/nope", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_id");
    app.get(
        "/v1/executions/0190d9a0-0000-7000-8000-000000000000",
        ADMIN_KEY,
    )
    .await
    .assert_error(404, "not_found");
    app.stop().await;
}

async fn the_audit_trail_records_each_change_with_before_and_after(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.post("/v1/agents/echo/pause", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    let trail = app.get("/v1/audit?limit=200", ADMIN_KEY).await.ok(200);
    let actions: Vec<_> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "agent.pause",
        "version.upload",
        "agent.create",
        "tenant.bootstrap",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let pause = app
        .get("/v1/audit?action=agent.pause", ADMIN_KEY)
        .await
        .ok(200);
    let event = &pause["items"][0];
    assert_eq!(
        (
            event["before"]["status"].as_str(),
            event["after"]["status"].as_str()
        ),
        (Some("active"), Some("paused"))
    );
    assert!(event["request_id"].is_string() && event["client_addr"] == "127.0.0.1");
    let actor = event["actor_key_id"].as_str().unwrap();
    let by_actor = app
        .get(
            &format!("/v1/audit?actor={actor}&resource_type=agent"),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert!(
        by_actor["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_key_id"] == actor && e["resource_type"] == "agent")
    );
    let agent_id = event["resource_id"].as_str().unwrap();
    let by_resource = app
        .get(&format!("/v1/audit?resource_id={agent_id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert!(by_resource["items"].as_array().unwrap().len() >= 2);
    assert_eq!(
        app.get("/v1/audit?since=2999-01-01T00:00:00Z", ADMIN_KEY)
            .await
            .ok(200)["items"],
        json!([])
    );
    app.stop().await;
}

async fn costs_add_up_to_the_executions(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    let mut total_pico: i128 = 0;
    for body in [
        json!({ "action": "echo", "input": { "a": 1 } }),
        json!({ "action": "echo", "input": { "a": 2 } }),
        json!({ "action": "burn", "input": { "iterations": 50000 } }),
    ] {
        let agent = if body["action"] == "burn" {
            "hostile"
        } else {
            "echo"
        };
        let reply = app.invoke(agent, ADMIN_KEY, body).await.ok(200);
        total_pico += picodollars(reply["cost"].as_str().unwrap());
    }
    for period in ["day", "week", "month"] {
        let report = app
            .get(&format!("/v1/costs?period={period}"), ADMIN_KEY)
            .await
            .ok(200);
        assert_eq!(report["total_executions"], 3, "{report:#}");
        assert_eq!(
            picodollars(report["total_cost"].as_str().unwrap()),
            total_pico,
            "{period}"
        );
        let agents: Vec<_> = report["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["agent"].as_str().unwrap())
            .collect();
        assert_eq!(agents, ["echo", "hostile"], "{period}");
    }
    app.get("/v1/costs?period=hour", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get(
        "/v1/costs?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z",
        ADMIN_KEY,
    )
    .await
    .assert_error(400, "invalid_query");
    let empty = app
        .get("/v1/costs?until=2000-01-01T00:00:00Z", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(empty["total_cost"], "0.000000000000");
    app.stop().await;
}

/// "0.000000123456" -> 123456.
fn picodollars(dollars: &str) -> i128 {
    let (whole, fraction) = dollars.split_once('.').unwrap();
    assert_eq!(fraction.len(), 12, "{dollars}");
    whole.parse::<i128>().unwrap() * 1_000_000_000_000 + fraction.parse::<i128>().unwrap()
}

async fn a_deleted_agents_executions_are_still_found_by_its_name(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let old = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": { "v": 1 } }),
        )
        .await
        .ok(200);
    assert_eq!(
        app.send(Method::DELETE, "/v1/agents/echo", Some(ADMIN_KEY), None)
            .await
            .status,
        204
    );
    let ids = |page: serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let old_id = old["execution_id"].as_str().unwrap().to_string();
    assert_eq!(
        ids(app.get("/v1/executions", ADMIN_KEY).await.ok(200)),
        [old_id.clone()]
    );
    assert_eq!(
        ids(app
            .get("/v1/executions?agent=echo", ADMIN_KEY)
            .await
            .ok(200)),
        [old_id.clone()],
        "the history of a deleted agent is found by its name"
    );

    // A new agent under the same name: the name's whole history, newest first.
    app.agent_with("echo", ECHO).await;
    let new = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": { "v": 2 } }),
        )
        .await
        .ok(200);
    let new_id = new["execution_id"].as_str().unwrap().to_string();
    assert_eq!(
        ids(app
            .get("/v1/executions?agent=echo", ADMIN_KEY)
            .await
            .ok(200)),
        [new_id.clone(), old_id.clone()]
    );
    let first = app
        .get("/v1/executions?agent=echo&limit=1", ADMIN_KEY)
        .await
        .ok(200);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(ids(first), [new_id]);
    assert_eq!(
        ids(app
            .get(
                &format!("/v1/executions?agent=echo&limit=1&cursor={cursor}"),
                ADMIN_KEY
            )
            .await
            .ok(200)),
        [old_id]
    );
    app.stop().await;
}

async fn time_filters_include_since_and_exclude_until(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let mut finished = Vec::new();
    for i in 0..3 {
        let run = app
            .invoke(
                "echo",
                ADMIN_KEY,
                json!({ "action": "echo", "input": { "i": i } }),
            )
            .await
            .ok(200);
        let id = run["execution_id"].as_str().unwrap();
        let record = app
            .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
            .await
            .ok(200);
        let at = chrono::DateTime::parse_from_rfc3339(record["finished_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        finished.push((id.to_string(), at));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let listed = |query: String| {
        let app = &app;
        async move {
            let page = app
                .get(&format!("/v1/executions?{query}"), ADMIN_KEY)
                .await
                .ok(200);
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let (middle, at) = finished[1].clone();
    assert_eq!(
        listed(format!("since={}&until={}", rfc(at), rfc(finished[2].1))).await,
        [middle.clone()],
        "since is inclusive, until exclusive"
    );
    let just_after = at + chrono::Duration::microseconds(1);
    assert_eq!(
        listed(format!("since={}", rfc(just_after))).await,
        [finished[2].0.clone()]
    );
    assert_eq!(
        listed(format!("until={}", rfc(just_after))).await,
        [middle.clone(), finished[0].0.clone()]
    );
    // An offset other than Z names the same instant.
    let in_paris = at
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    assert_eq!(
        listed(format!(
            "since={}&until={}",
            in_paris.replace('+', "%2B"),
            rfc(just_after)
        ))
        .await,
        [middle]
    );
    let report = app
        .get(
            &format!("/v1/costs?since={}&until={}", rfc(at), rfc(just_after)),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert_eq!(report["total_executions"], 1, "{report:#}");
    app.stop().await;
}

async fn every_change_is_audited_with_what_it_changed(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post("/v1/agents", ADMIN_KEY, json!({ "name": "multi" }))
        .await
        .ok(201);
    let agent_id = created["id"].as_str().unwrap().to_string();
    let first = app
        .upload("multi", ADMIN_KEY, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    let second = app
        .upload(
            "multi",
            ADMIN_KEY,
            std::fs::read(corral_tests::plugins::TEXT_STATS).unwrap(),
        )
        .await
        .ok(201);
    app.post(
        "/v1/agents/multi/versions/1.0.0/activate",
        ADMIN_KEY,
        json!({}),
    )
    .await
    .ok(200);
    app.send(
        Method::PUT,
        "/v1/agents/multi/policy",
        Some(ADMIN_KEY),
        Some(json!({ "limits": { "fuel": 5000000 } })),
    )
    .await
    .ok(200);
    app.post("/v1/agents/multi/pause", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    app.post("/v1/agents/multi/resume", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(
        app.send(Method::DELETE, "/v1/agents/multi", Some(ADMIN_KEY), None)
            .await
            .status,
        204
    );
    let (tenant_id, _) = app.tenant("acme").await;

    let one = |action: &'static str| {
        let app = &app;
        async move {
            let page = app
                .get(&format!("/v1/audit?action={action}"), ADMIN_KEY)
                .await
                .ok(200);
            let items = page["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{action}: {page:#}");
            let event = items[0].clone();
            assert_eq!(event["result"], "ok", "{event:#}");
            assert!(event["actor_key_id"].is_string(), "{event:#}");
            event
        }
    };
    let create = one("agent.create").await;
    assert_eq!(create["resource_id"], agent_id.as_str());
    assert!(create["before"].is_null());
    assert_eq!(create["after"]["name"], "multi");

    let uploads = app
        .get("/v1/audit?action=version.upload", ADMIN_KEY)
        .await
        .ok(200);
    let uploads = uploads["items"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0]["resource_id"], second["id"]);
    assert_eq!(uploads[0]["after"]["activated"], false);
    assert_eq!(uploads[1]["resource_id"], first["id"]);
    assert_eq!(uploads[1]["after"]["sha256"], first["sha256"]);

    let activate = one("version.activate").await;
    assert_eq!(activate["before"]["active_version_id"], first["id"]);
    assert_eq!(activate["after"]["active_version_id"], second["id"]);

    let policy = one("agent.update_policy").await;
    assert_eq!(policy["before"]["policy"]["limits"], json!({}));
    assert_eq!(policy["after"]["policy"]["limits"]["fuel"], 5_000_000);

    let pause = one("agent.pause").await;
    assert_eq!(pause["after"]["status"], "paused");
    let resume = one("agent.resume").await;
    assert_eq!(
        (
            resume["before"]["status"].as_str(),
            resume["after"]["status"].as_str()
        ),
        (Some("paused"), Some("active"))
    );

    let delete = one("agent.delete").await;
    assert_eq!(delete["resource_id"], agent_id.as_str());
    assert_eq!(delete["before"]["name"], "multi");
    assert_eq!(delete["before"]["active_version_id"], second["id"]);
    assert!(delete["after"].is_null());

    let tenant = one("tenant.create").await;
    assert_eq!(tenant["resource_id"], tenant_id.as_str());
    assert_eq!(tenant["after"]["name"], "acme");

    // Every event about the agent, found by resource, in order.
    let trail = app
        .get(
            &format!("/v1/audit?resource_type=agent&resource_id={agent_id}"),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    let actions: Vec<_> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "agent.delete",
            "agent.resume",
            "agent.pause",
            "agent.update_policy",
            "version.activate",
            "agent.create",
        ]
    );
    app.get("/v1/audit?since=now", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/audit?colour=red", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.stop().await;
}

/// Every character U+0000 to U+00FF, as the hostile agent's `every_byte` emits them,
/// and as they are stored: the NUL replaced by U+FFFD.
fn every_char() -> (String, String) {
    let chars: String = (0..=255u32).filter_map(char::from_u32).collect();
    let stored = chars.replace('\0', "\u{FFFD}");
    (chars, stored)
}

async fn a_guest_that_emits_every_byte_is_recorded_and_charged(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("hostile", HOSTILE).await;
    let (chars, stored) = every_char();
    let invoke = |body: serde_json::Value| {
        app.send_request(
            app.request(Method::POST, "/v1/agents/hostile/invoke", Some(ADMIN_KEY))
                .header("idempotency-key", body["input"]["fail"].to_string())
                .json(&body),
        )
    };

    let ran = invoke(json!({ "action": "every_byte", "input": { "fail": false } }))
        .await
        .ok(200);
    assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
    assert_eq!(
        ran["output"]["chars"], chars,
        "the answer is the guest's, exactly"
    );
    let id = ran["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["record_degraded"], false, "{record:#}");
    // One NUL in the log line, one on stdout, one on stderr.
    assert_eq!(record["replaced_characters"], 3, "{record:#}");
    let from = |source: &str| -> String {
        record["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["source"] == source)
            .map(|entry| entry["message"].as_str().unwrap())
            .collect()
    };
    assert_eq!(from("agent"), stored);
    let bytes: Vec<u8> = (0..=255).collect();
    let stream = String::from_utf8_lossy(&bytes).replace('\0', "\u{FFFD}");
    assert_eq!(from("stdout"), stream);
    assert_eq!(from("stderr"), stream);

    let failed = invoke(json!({ "action": "every_byte", "input": { "fail": true } }))
        .await
        .ok(200);
    assert_eq!(failed["outcome"], "agent_error", "{failed:#}");
    let id = failed["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["error_code"], "every\u{FFFD}byte");
    assert_eq!(record["error_message"], stored);
    assert_eq!(record["replaced_characters"], 3 + 2, "{record:#}");

    // Both were charged, once: the retries get the stored answers without running.
    let again = invoke(json!({ "action": "every_byte", "input": { "fail": false } }))
        .await
        .ok(200);
    assert_eq!(again["execution_id"], ran["execution_id"]);
    let again = invoke(json!({ "action": "every_byte", "input": { "fail": true } }))
        .await
        .ok(200);
    assert_eq!(again["execution_id"], failed["execution_id"]);
    assert_eq!(app.count("executions").await, 2);
    let usage = app.get("/v1/agents/hostile/usage", ADMIN_KEY).await.ok(200);
    assert_eq!(usage["usage"]["used"]["day"]["invocations"], 2, "{usage:#}");
    app.stop().await;
}

async fn a_nul_character_in_any_text_the_api_receives_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let before = app.snapshot().await;
    let nul = "a\u{0}b";
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": nul }))
        .await
        .assert_error(400, "invalid_text");
    app.post(
        "/v1/agents",
        ADMIN_KEY,
        json!({ "name": "fine", "description": nul }),
    )
    .await
    .assert_error(400, "invalid_text");
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "correlation_id": nul }),
    )
    .await
    .assert_error(400, "invalid_text");
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": { nul: nul } }),
    )
    .await
    .assert_error(400, "invalid_text");
    app.post("/v1/tenants", ADMIN_KEY, json!({ "name": nul }))
        .await
        .assert_error(400, "invalid_text");
    app.post(
        "/v1/keys",
        ADMIN_KEY,
        json!({ "name": nul, "role": "viewer" }),
    )
    .await
    .assert_error(400, "invalid_text");
    app.send(
        Method::PUT,
        "/v1/agents/echo/config",
        Some(ADMIN_KEY),
        Some(json!({ "values": { "greeting": nul } })),
    )
    .await
    .assert_error(400, "invalid_text");
    for path in [
        "/v1/agents/a%00b",
        "/v1/agents/echo%00",
        "/v1/executions/x%00y",
        "/v1/executions?correlation_id=a%00b",
        "/v1/executions?cursor=%00",
        "/v1/executions?agent=echo%00",
        "/v1/audit?action=a%00",
        "/v1/agents/echo/kv/a%00b",
    ] {
        app.get(path, ADMIN_KEY)
            .await
            .assert_error(400, "invalid_text");
    }
    // An escaped backslash before `u0000` is plain text, not a NUL.
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": { "text": "\\u0000" } }),
    )
    .await
    .ok(200);
    let mut after = app.snapshot().await;
    after[4] -= 1; // the one invocation that ran
    assert_eq!(after, before, "nothing refused was written");
    app.stop().await;
}

async fn records_are_purged_when_their_retention_ends(backend: Backend) {
    use corral_host::quota::clock::ManualClock;
    use std::sync::Arc;
    let clock = Arc::new(ManualClock::new(corral_host::db::now()));
    let app = {
        let clock = clock.clone();
        corral_tests::app::spawn_app_with(backend, move |config| {
            config.clock = Some(clock);
            config.retention_interval = std::time::Duration::from_millis(200);
        })
        .await
    };
    let day = chrono::Duration::days(1);
    app.agent_with("echo", ECHO).await;
    let kept = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": { "n": 1 } }),
        )
        .await
        .ok(200);
    let kept = format!("/v1/executions/{}", kept["execution_id"].as_str().unwrap());
    // A tenant that keeps its executions one day.
    let (tenant, key) = app.tenant("brief").await;
    app.post("/v1/agents", &key, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.upload("echo", &key, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    app.invoke("echo", &key, json!({ "action": "echo" }))
        .await
        .ok(200);
    let path = format!("/v1/tenants/{tenant}/policy");
    let policy = |retention: serde_json::Value| {
        app.send(
            Method::PUT,
            &path,
            Some(ADMIN_KEY),
            Some(json!({ "retention": retention })),
        )
    };
    policy(json!({ "audit_days": 30 }))
        .await
        .assert_error(400, "invalid_policy");
    policy(json!({ "executions_days": 1 })).await.ok(200);
    // Key-value entries that expired, and those of a deleted agent, are reaped.
    app.agent_with("notes", corral_tests::plugins::NOTES).await;
    app.set_policy("notes", json!({ "grants": { "kv": {} } }))
        .await;
    for body in [
        json!({ "text": "brief", "ttl_ms": 1000 }),
        json!({ "text": "kept" }),
    ] {
        app.invoke(
            "notes",
            ADMIN_KEY,
            json!({ "action": "add", "input": body }),
        )
        .await
        .ok(200);
    }
    app.agent_with("gone", corral_tests::plugins::NOTES).await;
    app.set_policy("gone", json!({ "grants": { "kv": {} } }))
        .await;
    app.invoke(
        "gone",
        ADMIN_KEY,
        json!({ "action": "add", "input": { "text": "x" } }),
    )
    .await
    .ok(200);
    app.send(Method::DELETE, "/v1/agents/gone", Some(ADMIN_KEY), None)
        .await
        .ok(204);
    assert_eq!(app.count("kv_entries").await, 3);

    let executions_of = |tenant: String| {
        let app = &app;
        async move {
            let sql = format!("SELECT COUNT(*) FROM executions WHERE tenant_id = '{tenant}'");
            let row: (i64,) =
                corral_host::on_pool!(&app.db, pool => sqlx::query_as(&sql).fetch_one(pool).await)
                    .unwrap();
            row.0
        }
    };

    clock.advance(day * 2);
    let mut purged = false;
    for _ in 0..100 {
        if executions_of(tenant.clone()).await == 0 && app.count("kv_entries").await == 1 {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        purged,
        "the brief tenant's executions and the dead kv entries were purged"
    );
    let record = app.get(&kept, ADMIN_KEY).await.ok(200);
    assert!(
        !record["logs"].as_array().unwrap().is_empty(),
        "logs are kept 30 days"
    );

    clock.advance(day * 31);
    let mut emptied = false;
    for _ in 0..100 {
        let record = app.get(&kept, ADMIN_KEY).await.ok(200);
        if record["logs"].as_array().unwrap().is_empty() {
            emptied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(emptied, "logs are emptied after 30 days, the record stays");

    clock.advance(day * 400);
    let mut gone = false;
    for _ in 0..100 {
        if app.get(&kept, ADMIN_KEY).await.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "executions go after 90 days");
    // Audit events older than 400 days went too; each purge is itself audited.
    let mut audit = json!(null);
    for _ in 0..100 {
        audit = app.get("/v1/audit?limit=200", ADMIN_KEY).await.ok(200);
        let items = audit["items"].as_array().unwrap();
        if items.iter().all(|e| e["action"] == "retention.purge") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let items = audit["items"].as_array().unwrap();
    assert!(
        items.iter().all(|e| e["action"] == "retention.purge"),
        "{audit:#}"
    );
    // Every purge is audited, those that deleted nothing too: on a slow machine there
    // are more than a page of them, so read every page.
    let mut deleted = 0;
    let first = "/v1/audit?action=retention.purge&limit=200";
    let mut page = first.to_string();
    loop {
        let audit = app.get(&page, ADMIN_KEY).await.ok(200);
        deleted += audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["after"]["audit_events_deleted"].as_u64().unwrap())
            .sum::<u64>();
        match audit["next_cursor"].as_str() {
            Some(cursor) => page = format!("{first}&cursor={cursor}"),
            None => break,
        }
    }
    assert!(deleted > 0, "no purge deleted an audit event");
    app.stop().await;
}
