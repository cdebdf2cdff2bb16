//! Every capability, denied by default, through the API: each refusal fails in the
//! guest, is kept in the execution's record (`capabilities.denials`), and is an audit
//! event `capability.<name>`; granted use is counted in the record.

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app};
use corral_tests::plugins::{FETCH, GREETER, NOTES, RELAY};
use corral_tests::upstream::Upstream;
use serde_json::{Value, json};

crate::on_both_backends!(
    every_denial_is_recorded_and_audited,
    http_past_the_allowlist_is_refused_after_dns_too,
);

/// The stored record of an invocation's execution.
async fn record(app: &TestApp, ran: &Value) -> Value {
    let id = ran["execution_id"].as_str().unwrap();
    app.get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200)
}

async fn every_denial_is_recorded_and_audited(backend: Backend) {
    let upstream = Upstream::start().await;
    let app = spawn_app(backend).await;
    for (name, plugin) in [
        ("fetch", FETCH),
        ("notes", NOTES),
        ("greeter", GREETER),
        ("relay", RELAY),
    ] {
        app.agent_with(name, plugin).await;
    }
    let runs = [
        (
            "fetch",
            json!({ "action": "get", "input": { "url": upstream.url("/hello") } }),
            "http",
        ),
        (
            "notes",
            json!({ "action": "add", "input": { "text": "hi" } }),
            "kv",
        ),
        (
            "greeter",
            json!({ "action": "sign", "input": { "name": "Ada" } }),
            "secrets",
        ),
        (
            "relay",
            json!({ "action": "call", "input": { "agent": "notes", "action": "count" } }),
            "agents",
        ),
    ];
    for (agent, call, capability) in &runs {
        let ran = app.invoke(agent, ADMIN_KEY, call.clone()).await.ok(200);
        assert_eq!(ran["outcome"], "agent_error", "{agent}: {ran:#}");
        assert_eq!(ran["denials"][0]["capability"], *capability, "{ran:#}");
        let stored = record(&app, &ran).await;
        assert_eq!(
            stored["capabilities"]["denials"][0]["capability"], *capability,
            "{stored:#}"
        );
        let audit = app
            .get(
                &format!("/v1/audit?action=capability.{capability}"),
                ADMIN_KEY,
            )
            .await
            .ok(200);
        let event = &audit["items"][0];
        assert_eq!(
            (
                &event["result"],
                &event["resource_type"],
                &event["resource_id"]
            ),
            (&json!("denied"), &json!("execution"), &ran["execution_id"]),
            "{audit:#}"
        );
        assert_eq!(event["after"]["agent"], *agent);
    }
    assert_eq!(
        upstream.hits(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );

    // Granted, each one works and its use is counted in the record.
    app.set_policy(
        "fetch",
        json!({ "grants": { "http": { "allow": [upstream.rule()] } } }),
    )
    .await;
    app.set_policy("notes", json!({ "grants": { "kv": {} } }))
        .await;
    app.set_policy(
        "relay",
        json!({ "grants": { "agents": { "allow": ["notes"] } } }),
    )
    .await;
    let fetched = app
        .invoke("fetch", ADMIN_KEY, runs[0].1.clone())
        .await
        .ok(200);
    assert_eq!(
        record(&app, &fetched).await["capabilities"]["http"]["requests"],
        1
    );
    let noted = app
        .invoke("notes", ADMIN_KEY, runs[1].1.clone())
        .await
        .ok(200);
    assert_eq!(noted["outcome"], "succeeded", "{noted:#}");
    let stored = record(&app, &noted).await;
    assert_eq!(stored["capabilities"]["kv"]["writes"], 1, "{stored:#}");
    let relayed = app
        .invoke("relay", ADMIN_KEY, runs[3].1.clone())
        .await
        .ok(200);
    assert_eq!(relayed["outcome"], "succeeded", "{relayed:#}");
    assert_eq!(
        record(&app, &relayed).await["capabilities"]["agents"]["calls"],
        1
    );
    app.stop().await;
}

async fn http_past_the_allowlist_is_refused_after_dns_too(backend: Backend) {
    let upstream = Upstream::start().await;
    let app = spawn_app(backend).await;
    app.agent_with("fetch", FETCH).await;
    // `localhost` is on the list, but it resolves to a loopback address, which only a
    // rule naming the address itself opens.
    let port = upstream.port();
    app.set_policy(
        "fetch",
        json!({ "grants": { "http": { "allow": [format!("http://localhost:{port}")] } } }),
    )
    .await;
    let get = |url: String| json!({ "action": "get", "input": { "url": url } });
    let ran = app
        .invoke(
            "fetch",
            ADMIN_KEY,
            get(format!("http://localhost:{port}/hello")),
        )
        .await
        .ok(200);
    assert_eq!(ran["denials"][0]["reason"], "prohibited_address", "{ran:#}");
    // Not on the list: another port, the metadata address.
    for url in [
        format!("http://localhost:{}/hello", port + 1),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let ran = app.invoke("fetch", ADMIN_KEY, get(url)).await.ok(200);
        assert_eq!(ran["denials"][0]["reason"], "not_allowed", "{ran:#}");
    }
    let audit = app
        .get("/v1/audit?action=capability.http", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 3, "{audit:#}");
    assert_eq!(upstream.hits(), Vec::<String>::new());
    app.stop().await;
}
