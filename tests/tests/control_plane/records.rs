//! Reading back: executions with filters and cursors, the audit trail, and costs.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app};
use corral_tests::plugins::{ECHO, HOSTILE};
use serde_json::json;

crate::on_both_backends!(
    executions_are_filtered_and_paged,
    the_audit_trail_records_each_change_with_before_and_after,
    costs_add_up_to_the_executions,
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
