//! Quotas: policies for agents and tenants, rate, concurrency, budgets across period
//! boundaries (on an injected clock), plan caps, usage reports and the CLI's view.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_host::quota::clock::ManualClock;
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, TEXT_STATS};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    policies_are_validated_and_read_back,
    a_rate_quota_admits_its_burst_then_refills_with_time,
    a_concurrency_quota_refuses_the_invocation_past_it,
    dollar_budgets_stop_exactly_at_the_limit_and_roll_over,
    a_dollar_budget_with_less_left_than_one_invocation_refuses_and_numbers_are_exact,
    a_fuel_budget_lowers_the_last_invocations_fuel,
    tenant_quotas_cover_all_its_agents_and_its_limits_tighten_theirs,
    plan_caps_bound_agents_versions_and_bytes,
    the_cli_reads_and_sets_policies_and_shows_usage,
);

/// 2026-03-31 23:00 UTC: an hour before both a day and a month roll over.
fn eve_of_a_month() -> DateTime<Utc> {
    "2026-03-31T23:00:00Z".parse().unwrap()
}

/// An app on `backend` whose quota clock is `clock` and where an invocation costs
/// exactly one dollar (no fuel or memory prices).
async fn app_on_clock(backend: Backend, clock: &Arc<ManualClock>) -> TestApp {
    let clock = clock.clone();
    spawn_app_with(backend, move |config| {
        config.clock = Some(clock);
        config.price_per_invocation = "1".parse().unwrap();
        config.price_per_million_fuel = "0".parse().unwrap();
        config.price_per_gib_second = "0".parse().unwrap();
    })
    .await
}

async fn set_tenant_policy(app: &TestApp, tenant: &str, policy: Value) -> Value {
    app.send(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/policy"),
        Some(ADMIN_KEY),
        Some(policy),
    )
    .await
    .ok(200)
}

fn echo() -> Value {
    json!({ "action": "echo", "input": { "n": 1 } })
}

async fn usage(app: &TestApp, agent: &str) -> Value {
    app.get(&format!("/v1/agents/{agent}/usage"), ADMIN_KEY)
        .await
        .ok(200)
}

async fn policies_are_validated_and_read_back(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let before = app.snapshot().await;
    for (policy, names) in [
        (
            json!({ "quotas": { "max_concurrency": 0 } }),
            "quotas.max_concurrency",
        ),
        (
            json!({ "quotas": { "max_concurrency": 1_000_000 } }),
            "at most",
        ),
        (json!({ "quotas": { "rate": { "requests": 5 } } }), "per"),
        (
            json!({ "quotas": { "budgets": { "dollars_per_day": "-2" } } }),
            "dollars_per_day",
        ),
        (
            json!({ "quotas": { "budgets": { "fuel_per_day": -5 } } }),
            "fuel_per_day",
        ),
        (
            json!({ "quotas": { "budgets": { "fuel": 5 } } }),
            "unknown field",
        ),
    ] {
        let reply = app
            .send(
                Method::PUT,
                "/v1/agents/echo/policy",
                Some(ADMIN_KEY),
                Some(policy),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 400, "{:#}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
    }
    assert_eq!(app.snapshot().await, before, "nothing half-written");

    let policy = json!({ "limits": { "fuel": 5000000 }, "quotas": {
        "max_concurrency": 4, "rate": { "requests": 10, "per": "minute", "burst": 2 },
        "budgets": { "fuel_per_month": 1000000000, "dollars_per_day": "1.5" } } });
    app.set_policy("echo", policy.clone()).await;
    let agent = app.get("/v1/agents/echo", ADMIN_KEY).await.ok(200);
    assert_eq!(agent["policy"], policy);

    // A tenant reads its own policy; only operator admins set one, and another
    // tenant's is not found.
    let (tenant, tenant_admin) = app.tenant("acme").await;
    let caps = json!({ "caps": { "max_agents": 3 } });
    assert_eq!(
        set_tenant_policy(&app, &tenant, caps.clone()).await["caps"],
        caps["caps"]
    );
    assert_eq!(
        app.get(&format!("/v1/tenants/{tenant}/policy"), &tenant_admin)
            .await
            .ok(200)["caps"],
        caps["caps"]
    );
    app.send(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/policy"),
        Some(&tenant_admin),
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden");
    let operator = app.get("/v1/tenants", ADMIN_KEY).await.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["is_operator"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.get(&format!("/v1/tenants/{operator}/policy"), &tenant_admin)
        .await
        .assert_error(404, "not_found");
    app.send(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/policy"),
        Some(ADMIN_KEY),
        Some(json!({ "caps": { "max_component_bytes": 1u64 << 40 } })),
    )
    .await
    .assert_error(400, "invalid_policy");
    let audit = app
        .get("/v1/audit?action=tenant.update_policy", &tenant_admin)
        .await
        .ok(200);
    let results: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    // The operator's change, and the tenant admin's refused attempt.
    assert_eq!(results.len(), 2, "{audit:#}");
    assert!(
        results.contains(&"ok") && results.contains(&"denied"),
        "{audit:#}"
    );
    app.stop().await;
}

async fn a_rate_quota_admits_its_burst_then_refills_with_time(backend: Backend) {
    let clock = Arc::new(ManualClock::new(eve_of_a_month()));
    let app = app_on_clock(backend, &clock).await;
    app.agent_with("echo", ECHO).await;
    app.set_policy(
        "echo",
        json!({ "quotas": { "rate": { "requests": 2, "per": "second", "burst": 3 } } }),
    )
    .await;
    for _ in 0..3 {
        app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    }
    let refused = app.invoke("echo", ADMIN_KEY, echo()).await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(refused.retry_after(), Some(1));
    let executions = app.count("executions").await;

    // Half a second later, one token (2 per second) is back: one more, not two.
    clock.advance(chrono::Duration::milliseconds(500));
    app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    app.invoke("echo", ADMIN_KEY, echo())
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(app.count("executions").await, executions + 1);

    let report = usage(&app, "echo").await;
    assert_eq!(
        report["usage"]["denials"]["day"]["rate_limited"], 2,
        "{report:#}"
    );
    assert_eq!(report["usage"]["used"]["day"]["invocations"], 4);
    assert_eq!(report["usage"]["rate"]["tokens_available"], 0.0);
    let audit = app
        .get("/v1/audit?action=agent.invoke", ADMIN_KEY)
        .await
        .ok(200);
    let denied: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "denied")
        .collect();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0]["after"]["code"], "rate_limited");
    app.stop().await;
}

async fn a_concurrency_quota_refuses_the_invocation_past_it(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("slow", HOSTILE).await;
    app.agent_with("echo", ECHO).await;
    app.set_policy("slow", json!({ "quotas": { "max_concurrency": 1 } }))
        .await;
    let sleeper = {
        let (url, http) = (app.url.clone(), app.http.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/agents/slow/invoke"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({ "action": "sleep", "input": { "ms": 1500 } }))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the sleeper holds the slot.
    let mut held = false;
    for _ in 0..100 {
        if usage(&app, "slow").await["usage"]["concurrency"]["in_flight"] == 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "the first invocation never showed as running");
    let refused = app
        .invoke(
            "slow",
            ADMIN_KEY,
            json!({ "action": "sleep", "input": { "ms": 1 } }),
        )
        .await;
    refused.assert_error(429, "concurrency_limited");
    assert!(refused.retry_after().is_some());
    // Another agent is not held back by this one's quota.
    app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    assert_eq!(sleeper.await.unwrap().as_u16(), 200);
    // The slot is free again.
    app.invoke(
        "slow",
        ADMIN_KEY,
        json!({ "action": "sleep", "input": { "ms": 1 } }),
    )
    .await
    .ok(200);
    assert_eq!(
        usage(&app, "slow").await["usage"]["concurrency"],
        json!({ "in_flight": 0, "limit": 1 })
    );
    app.stop().await;
}

async fn dollar_budgets_stop_exactly_at_the_limit_and_roll_over(backend: Backend) {
    let clock = Arc::new(ManualClock::new(eve_of_a_month()));
    let app = app_on_clock(backend, &clock).await;
    app.agent_with("echo", ECHO).await;
    app.set_policy(
        "echo",
        json!({ "quotas": { "budgets": { "dollars_per_day": "3", "dollars_per_month": "5" } } }),
    )
    .await;
    // $1 each: three fit the day exactly.
    for _ in 0..3 {
        let ran = app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
        assert_eq!(ran["cost"], "1.000000000000");
    }
    let refused = app.invoke("echo", ADMIN_KEY, echo()).await;
    refused.assert_error(429, "budget_exhausted");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dollars_per_day")
    );
    // Until midnight: an hour.
    assert_eq!(refused.retry_after(), Some(3600));
    let report = usage(&app, "echo").await;
    let day = &report["usage"]["budgets"][0];
    assert_eq!(
        (
            &day["budget"],
            &day["used"],
            &day["remaining"],
            &day["exhausted"]
        ),
        (
            &json!("dollars_per_day"),
            &json!("3.000000000000"),
            &json!("0.000000000000"),
            &json!(true)
        ),
        "{report:#}"
    );

    // A new day and a new month: both budgets start over.
    clock.advance(chrono::Duration::hours(2));
    for _ in 0..3 {
        app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    }
    app.invoke("echo", ADMIN_KEY, echo())
        .await
        .assert_error(429, "budget_exhausted");
    // The next day, the month's $5 stops it after two more.
    clock.advance(chrono::Duration::days(1));
    for _ in 0..2 {
        app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    }
    let refused = app.invoke("echo", ADMIN_KEY, echo()).await;
    refused.assert_error(429, "budget_exhausted");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dollars_per_month")
    );
    let report = usage(&app, "echo").await;
    assert_eq!(report["usage"]["used"]["month"]["invocations"], 5);
    assert_eq!(
        report["usage"]["used"]["month"]["dollars"],
        "5.000000000000"
    );
    assert_eq!(report["usage"]["used"]["day"]["invocations"], 2);
    // Charged exactly what ran: 8 executions, $8.
    assert_eq!(app.count("executions").await, 8);
    app.stop().await;
}

async fn a_fuel_budget_lowers_the_last_invocations_fuel(backend: Backend) {
    let clock = Arc::new(ManualClock::new(eve_of_a_month()));
    let app = app_on_clock(backend, &clock).await;
    app.agent_with("stats", TEXT_STATS).await;
    let call = json!({ "action": "stats", "input": { "text": "one two three four five" } });
    let first = app.invoke("stats", ADMIN_KEY, call.clone()).await.ok(200);
    let fuel = first["usage"]["fuel"].as_u64().unwrap();
    // Room for one and a half more.
    let budget = fuel * 5 / 2;
    app.set_policy(
        "stats",
        json!({ "quotas": { "budgets": { "fuel_per_day": budget } } }),
    )
    .await;
    let second = app.invoke("stats", ADMIN_KEY, call.clone()).await.ok(200);
    assert_eq!(second["outcome"], "succeeded");
    // The third may use only what is left, and runs out.
    let third = app.invoke("stats", ADMIN_KEY, call.clone()).await.ok(200);
    assert_eq!(third["outcome"], "fuel_exhausted", "{third:#}");
    assert_eq!(third["usage"]["fuel"].as_u64().unwrap(), budget - 2 * fuel);
    app.invoke("stats", ADMIN_KEY, call.clone())
        .await
        .assert_error(429, "budget_exhausted");
    let report = usage(&app, "stats").await;
    assert_eq!(
        report["usage"]["used"]["day"]["fuel"], budget,
        "never overspent"
    );
    app.stop().await;
}

async fn tenant_quotas_cover_all_its_agents_and_its_limits_tighten_theirs(backend: Backend) {
    let clock = Arc::new(ManualClock::new(eve_of_a_month()));
    let app = app_on_clock(backend, &clock).await;
    let (tenant, admin) = app.tenant("acme").await;
    set_tenant_policy(
        &app,
        &tenant,
        json!({ "limits": { "fuel": 2000000 },
                "quotas": { "budgets": { "dollars_per_day": "2" } } }),
    )
    .await;
    for name in ["one", "two"] {
        app.post("/v1/agents", &admin, json!({ "name": name }))
            .await
            .ok(201);
        app.upload(name, &admin, std::fs::read(ECHO).unwrap())
            .await
            .ok(201);
    }
    app.invoke("one", &admin, echo()).await.ok(200);
    app.invoke("two", &admin, echo()).await.ok(200);
    let refused = app.invoke("one", &admin, echo()).await;
    refused.assert_error(429, "budget_exhausted");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant's")
    );
    // The operator's own agents are not this tenant's budget.
    app.agent_with("echo", ECHO).await;
    app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);

    // The tenant's fuel limit tightens the host's for each call, and a call may not
    // ask for more.
    let report = app.get("/v1/agents/one/usage", &admin).await.ok(200);
    assert_eq!(report["limits"]["fuel"], 2000000);
    assert_eq!(report["tenant"]["used"]["day"]["invocations"], 2);
    assert_eq!(report["usage"]["used"]["day"]["invocations"], 1);
    let tenant_report = app
        .get(&format!("/v1/tenants/{tenant}/usage"), &admin)
        .await
        .ok(200);
    assert_eq!(
        tenant_report["usage"]["used"]["day"]["dollars"],
        "2.000000000000"
    );
    assert_eq!(
        tenant_report["usage"]["denials"]["day"]["budget_exhausted"],
        1
    );
    assert_eq!(tenant_report["caps"]["agents"]["used"], 2);
    clock.advance(chrono::Duration::hours(1));
    app.invoke("one", &admin, echo()).await.ok(200);
    app.invoke(
        "two",
        &admin,
        json!({ "action": "echo", "limits": { "fuel": 3000000 } }),
    )
    .await
    .assert_error(400, "invalid_limits");
    app.stop().await;
}

async fn plan_caps_bound_agents_versions_and_bytes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, admin) = app.tenant("small").await;
    let echo_size = std::fs::metadata(ECHO).unwrap().len();
    let stats_size = std::fs::metadata(TEXT_STATS).unwrap().len();
    set_tenant_policy(
        &app,
        &tenant,
        json!({ "caps": { "max_agents": 1, "max_versions": 2,
                          "max_total_component_bytes": echo_size + stats_size - 1,
                          "max_component_bytes": echo_size.max(stats_size) } }),
    )
    .await;
    app.post("/v1/agents", &admin, json!({ "name": "only" }))
        .await
        .ok(201);
    let before = app.snapshot().await;
    app.post("/v1/agents", &admin, json!({ "name": "second" }))
        .await
        .assert_error(409, "plan_limit_reached");
    app.upload("only", &admin, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    // Together they would pass the byte cap.
    app.upload("only", &admin, std::fs::read(TEXT_STATS).unwrap())
        .await
        .assert_error(409, "plan_limit_reached");
    set_tenant_policy(
        &app,
        &tenant,
        json!({ "caps": { "max_agents": 1, "max_versions": 1, "max_component_bytes": 1000 } }),
    )
    .await;
    app.upload("only", &admin, std::fs::read(TEXT_STATS).unwrap())
        .await
        .assert_error(413, "component_too_large");
    set_tenant_policy(&app, &tenant, json!({ "caps": { "max_versions": 1 } })).await;
    app.upload("only", &admin, std::fs::read(TEXT_STATS).unwrap())
        .await
        .assert_error(409, "plan_limit_reached");
    // Re-uploading identical bytes stores nothing new, so no cap refuses it.
    app.upload("only", &admin, std::fs::read(ECHO).unwrap())
        .await
        .ok(200);
    let after = app.snapshot().await;
    // Only the one version and the audit events were written.
    assert_eq!(after[3], before[3] + 1, "{before:?} → {after:?}");
    let report = app
        .get(&format!("/v1/tenants/{tenant}/usage"), &admin)
        .await
        .ok(200);
    assert_eq!(
        report["caps"]["versions"],
        json!({ "used": 1, "limit": 1 }),
        "{report:#}"
    );
    let denials = app
        .get("/v1/audit?resource_type=tenant", &admin)
        .await
        .ok(200);
    let caps: Vec<_> = denials["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["after"]["code"] == "plan_limit_reached")
        .map(|e| e["after"]["cap"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        caps.len(),
        3,
        "every refusal by a cap is on record: {denials:#}"
    );
    app.stop().await;
}

async fn the_cli_reads_and_sets_policies_and_shows_usage(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let (tenant, _) = app.tenant("acme").await;
    let url = app.url.clone();
    let corral = move |args: &[&str]| {
        let output = std::process::Command::new(corral_tests::harness::corral_bin())
            .args(args)
            .env("CORRAL_URL", &url)
            .env("CORRAL_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let policy = r#"{"quotas": {"max_concurrency": 3, "budgets": {"dollars_per_day": "0.5"}}}"#;
    let (code, out, err) =
        tokio::task::block_in_place(|| corral(&["agent", "policy", "echo", "--set", policy]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["quotas"]["max_concurrency"],
        3
    );
    app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    let (code, out, err) = tokio::task::block_in_place(|| corral(&["agent", "usage", "echo"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("today: 1 invocations"), "{out}");
    assert!(out.contains("budget dollars_per_day"), "{out}");
    assert!(out.contains("concurrency: 0 running of 3"), "{out}");
    let (_, out, _) = tokio::task::block_in_place(|| corral(&["agent", "usage", "echo", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["usage"]["used"]["day"]["invocations"],
        1
    );

    let (code, _, err) = tokio::task::block_in_place(|| {
        corral(&[
            "tenant",
            "policy",
            &tenant,
            "--set",
            r#"{"caps": {"max_agents": 0}}"#,
        ])
    });
    assert_eq!(code, Some(1));
    assert!(err.contains("400 invalid_policy"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        corral(&[
            "tenant",
            "policy",
            &tenant,
            "--set",
            r#"{"caps": {"max_agents": 5}}"#,
        ])
    });
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| corral(&["tenant", "usage", &tenant]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("agents: 0 of 5"), "{out}");
    app.stop().await;
}

async fn a_dollar_budget_with_less_left_than_one_invocation_refuses_and_numbers_are_exact(
    backend: Backend,
) {
    let clock = Arc::new(ManualClock::new(eve_of_a_month()));
    let app = app_on_clock(backend, &clock).await;
    app.agent_with("echo", ECHO).await;
    // A JSON number is taken as written, not through a float.
    let policy = app
        .send_request(
            app.request(Method::PUT, "/v1/agents/echo/policy", Some(ADMIN_KEY))
                .header("content-type", "application/json")
                .body(r#"{"quotas": {"budgets": {"dollars_per_day": 1.5, "dollars_per_month": 999999.123456789012}}}"#),
        )
        .await
        .ok(200);
    assert_eq!(
        policy["policy"]["quotas"]["budgets"]["dollars_per_month"], "999999.123456789012",
        "{policy:#}"
    );
    // $1 an invocation: one fits; the $0.50 left cannot pay for another.
    app.invoke("echo", ADMIN_KEY, echo()).await.ok(200);
    app.invoke("echo", ADMIN_KEY, echo())
        .await
        .assert_error(429, "budget_exhausted");
    let report = usage(&app, "echo").await;
    assert_eq!(
        report["usage"]["used"]["day"]["invocations"], 1,
        "{report:#}"
    );
    app.stop().await;
}
