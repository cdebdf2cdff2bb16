//! The audit trail (with the API's filters in the page's URL), API keys (create, with
//! the secret shown once; revoke), and tasks and workflows with their steps.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::executions::rfc3339;
use super::session::{Caller, NoFields, Posted};
use super::{ApiBody, Console, Page, query, segment};
use crate::tasks::TaskState;

/// The audit trail's filters: the API's parameters.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AuditFilters {
    actor: String,
    action: String,
    resource_type: String,
    resource_id: String,
    since: String,
    until: String,
    cursor: String,
}

/// `GET /console/audit?actor=&action=&resource_type=&resource_id=&since=&until=&cursor=`.
pub async fn audit(
    State(console): State<Console>,
    caller: Caller,
    Query(filters): Query<AuditFilters>,
) -> Page {
    let mut api = filters.clone();
    api.since = rfc3339(&filters.since);
    api.until = rfc3339(&filters.until);
    let events = console
        .get(&caller, &format!("/v1/audit{}", query(&api)))
        .await?;
    let next = events["next_cursor"].as_str().map(|cursor| {
        let mut next = filters.clone();
        next.cursor = cursor.into();
        format!("/console/audit{}", query(&next))
    });
    Ok(console.render(
        &caller,
        "audit.html",
        "audit",
        json!({ "items": events["items"], "next": next, "filters": filters }),
    ))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KeyPage {
    cursor: String,
}

/// `GET /console/keys`: the tenant's keys (admins only, as in the API).
pub async fn keys(
    State(console): State<Console>,
    caller: Caller,
    Query(page): Query<KeyPage>,
) -> Page {
    let keys = console
        .get(&caller, &format!("/v1/keys{}", query(&page)))
        .await?;
    Ok(console.render(
        &caller,
        "keys.html",
        "keys",
        json!({ "items": keys["items"], "next_cursor": keys["next_cursor"] }),
    ))
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    role: String,
}

/// `POST /console/keys`: creates a key and shows its secret, this once (the page is
/// not cached, and nothing redirects to it).
pub async fn create_key(
    State(console): State<Console>,
    Posted(caller, form): Posted<CreateKey>,
) -> Page {
    let created = console
        .call(
            &caller,
            Method::POST,
            "/v1/keys",
            ApiBody::Json(json!({ "name": form.name.trim(), "role": form.role })),
        )
        .await
        .map_err(|e| e.back("/console/keys"))?;
    let keys = console.get(&caller, "/v1/keys").await?;
    let page = console.render(
        &caller,
        "keys.html",
        "keys",
        json!({ "items": keys["items"], "next_cursor": keys["next_cursor"], "created": created }),
    );
    Ok((StatusCode::CREATED, page).into_response())
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke_key(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted(caller, NoFields {}): Posted<NoFields>,
) -> Page {
    let revoked = console
        .call(
            &caller,
            Method::DELETE,
            &format!("/v1/keys/{}", segment(&id)),
            ApiBody::Empty,
        )
        .await
        .map_err(|e| e.back("/console/keys"))?;
    Ok(console.done(
        &caller,
        "/console/keys",
        format!("Key {} revoked.", revoked["name"].as_str().unwrap_or("?")),
    ))
}

/// The task list's filters.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TaskFilters {
    agent: String,
    state: String,
    correlation_id: String,
    cursor: String,
}

/// `GET /console/tasks?agent=&state=&correlation_id=&cursor=`.
pub async fn tasks(
    State(console): State<Console>,
    caller: Caller,
    Query(filters): Query<TaskFilters>,
) -> Page {
    let tasks = console
        .get(&caller, &format!("/v1/tasks{}", query(&filters)))
        .await?;
    let next = tasks["next_cursor"].as_str().map(|cursor| {
        let mut next = filters.clone();
        next.cursor = cursor.into();
        format!("/console/tasks{}", query(&next))
    });
    Ok(console.render(
        &caller,
        "tasks.html",
        "tasks",
        json!({
            "items": tasks["items"],
            "next": next,
            "filters": filters,
            "states": TaskState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /console/tasks/{id}`: a task, its dependencies and its attempts.
pub async fn task(State(console): State<Console>, caller: Caller, Path(id): Path<String>) -> Page {
    let task = console
        .get(&caller, &format!("/v1/tasks/{}", segment(&id)))
        .await?;
    Ok(console.render(&caller, "task.html", "tasks", json!({ "task": task })))
}

/// The workflow list's filters.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkflowFilters {
    state: String,
    definition: String,
    correlation_id: String,
    cursor: String,
}

/// `GET /console/workflows?state=&definition=&correlation_id=&cursor=`.
pub async fn workflows(
    State(console): State<Console>,
    caller: Caller,
    Query(filters): Query<WorkflowFilters>,
) -> Page {
    let workflows = console
        .get(&caller, &format!("/v1/workflows{}", query(&filters)))
        .await?;
    let next = workflows["next_cursor"].as_str().map(|cursor| {
        let mut next = filters.clone();
        next.cursor = cursor.into();
        format!("/console/workflows{}", query(&next))
    });
    Ok(console.render(
        &caller,
        "workflows.html",
        "tasks",
        json!({ "items": workflows["items"], "next": next, "filters": filters }),
    ))
}

/// `GET /console/workflows/{id}`: the graph as its steps, in order, with their states,
/// dependencies, attempts and compensation.
pub async fn workflow(
    State(console): State<Console>,
    caller: Caller,
    Path(id): Path<String>,
) -> Page {
    let workflow = console
        .get(&caller, &format!("/v1/workflows/{}", segment(&id)))
        .await?;
    Ok(console.render(
        &caller,
        "workflow.html",
        "tasks",
        json!({ "workflow": workflow }),
    ))
}
