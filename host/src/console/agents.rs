//! Agents: the list (and a form to create one), and each agent's page — its versions
//! (upload, activate), pause and resume, its policy and grants, and a form to invoke it.

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::{Caller, NoFields, Posted};
use super::{ApiBody, Console, Page, PageError, query, segment};

/// `?cursor=` of a list page.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Cursor {
    #[serde(default)]
    cursor: String,
}

/// `GET /console/agents`.
pub async fn list(
    State(console): State<Console>,
    caller: Caller,
    Query(page): Query<Cursor>,
) -> Page {
    let agents = console
        .get(&caller, &format!("/v1/agents{}", query(&page)))
        .await?;
    Ok(console.render(&caller, "agents.html", "agents", agents))
}

#[derive(Deserialize)]
pub struct CreateAgent {
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /console/agents`.
pub async fn create(
    State(console): State<Console>,
    Posted(caller, form): Posted<CreateAgent>,
) -> Page {
    let name = form.name.trim();
    console
        .call(
            &caller,
            Method::POST,
            "/v1/agents",
            ApiBody::Json(json!({ "name": name, "description": form.description.trim() })),
        )
        .await
        .map_err(|e| e.back("/console/agents"))?;
    Ok(console.done(
        &caller,
        &format!("/console/agents/{}", segment(name)),
        format!("Agent {name} created. Upload a component to give it a version."),
    ))
}

/// `GET /console/agents/{name}`.
pub async fn show(
    State(console): State<Console>,
    caller: Caller,
    Path(name): Path<String>,
) -> Page {
    let base = format!("/v1/agents/{}", segment(&name));
    let agent = console.get(&caller, &base).await?;
    let versions = console
        .get(&caller, &format!("{base}/versions?limit=50"))
        .await?;
    let active = versions["items"]
        .as_array()
        .and_then(|items| items.iter().find(|v| v["active"] == true))
        .cloned()
        .unwrap_or(Value::Null);
    let policy = serde_json::to_string_pretty(&agent["policy"]).unwrap_or_default();
    Ok(console.render(
        &caller,
        "agent.html",
        "agents",
        json!({
            "agent": agent,
            "versions": versions["items"],
            "actions": active["metadata"]["actions"],
            "policy": policy,
        }),
    ))
}

/// `POST /console/agents/{name}/versions`: a multipart form with the component file,
/// sent to the API as the raw `application/wasm` body it takes.
pub async fn upload(
    State(console): State<Console>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Page {
    let back = format!("/console/agents/{}", segment(&name));
    let bad = |e: axum::extract::multipart::MultipartError| {
        PageError::invalid("invalid_form", e.body_text()).back(&back)
    };
    let (mut token, mut activate, mut component) = (None, false, None);
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "csrf" => token = Some(field.text().await.map_err(bad)?),
            "activate" => activate = true,
            "component" => component = Some(field.bytes().await.map_err(bad)?),
            _ => {}
        }
    }
    caller.check_post(&headers, token.as_deref())?;
    let component = component.ok_or_else(|| {
        PageError::invalid("empty_body", "choose a component file (.wasm) to upload").back(&back)
    })?;
    // Unticked, the API's default holds: the first version becomes active, later ones
    // wait for an activation.
    let activate = if activate { "?activate=true" } else { "" };
    let version = console
        .call(
            &caller,
            Method::POST,
            &format!("/v1/agents/{}/versions{activate}", segment(&name)),
            ApiBody::Wasm(component),
        )
        .await
        .map_err(|e| e.back(&back))?;
    let state = if version["active"] == true {
        "active"
    } else {
        "not active"
    };
    Ok(console.done(
        &caller,
        &back,
        format!(
            "Version {} uploaded ({state}).",
            version["version"].as_str().unwrap_or("?")
        ),
    ))
}

/// `POST /console/agents/{name}/versions/{version}/activate`.
pub async fn activate(
    State(console): State<Console>,
    Path((name, version)): Path<(String, String)>,
    Posted(caller, NoFields {}): Posted<NoFields>,
) -> Page {
    let back = format!("/console/agents/{}", segment(&name));
    let activated = console
        .call(
            &caller,
            Method::POST,
            &format!(
                "/v1/agents/{}/versions/{}/activate",
                segment(&name),
                segment(&version)
            ),
            ApiBody::Empty,
        )
        .await
        .map_err(|e| e.back(&back))?;
    Ok(console.done(
        &caller,
        &back,
        format!(
            "Version {} is now active.",
            activated["version"].as_str().unwrap_or("?")
        ),
    ))
}

/// `POST /console/agents/{name}/pause`.
pub async fn pause(
    State(console): State<Console>,
    Path(name): Path<String>,
    Posted(caller, NoFields {}): Posted<NoFields>,
) -> Page {
    set_status(&console, &caller, &name, "pause", "paused").await
}

/// `POST /console/agents/{name}/resume`.
pub async fn resume(
    State(console): State<Console>,
    Path(name): Path<String>,
    Posted(caller, NoFields {}): Posted<NoFields>,
) -> Page {
    set_status(&console, &caller, &name, "resume", "resumed").await
}

async fn set_status(
    console: &Console,
    caller: &Caller,
    name: &str,
    verb: &str,
    done: &str,
) -> Page {
    let back = format!("/console/agents/{}", segment(name));
    console
        .call(
            caller,
            Method::POST,
            &format!("/v1/agents/{}/{verb}", segment(name)),
            ApiBody::Empty,
        )
        .await
        .map_err(|e| e.back(&back))?;
    Ok(console.done(caller, &back, format!("Agent {name} {done}.")))
}

#[derive(Deserialize)]
pub struct PolicyForm {
    policy: String,
}

/// `POST /console/agents/{name}/policy`: the policy (limits, grants, quotas) as JSON,
/// sent to `PUT /v1/agents/{name}/policy`.
pub async fn update_policy(
    State(console): State<Console>,
    Path(name): Path<String>,
    Posted(caller, form): Posted<PolicyForm>,
) -> Page {
    let back = format!("/console/agents/{}", segment(&name));
    let policy: Value = serde_json::from_str(&form.policy).map_err(|e| {
        PageError::invalid("invalid_json", format!("the policy is not JSON: {e}")).back(&back)
    })?;
    console
        .call(
            &caller,
            Method::PUT,
            &format!("/v1/agents/{}/policy", segment(&name)),
            ApiBody::Json(policy),
        )
        .await
        .map_err(|e| e.back(&back))?;
    Ok(console.done(&caller, &back, "Policy saved.".into()))
}

#[derive(Deserialize)]
pub struct InvokeForm {
    action: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    correlation_id: String,
}

/// `POST /console/agents/{name}/invoke`: runs an action, then shows its execution.
pub async fn invoke(
    State(console): State<Console>,
    Path(name): Path<String>,
    Posted(caller, form): Posted<InvokeForm>,
) -> Page {
    let back = format!("/console/agents/{}", segment(&name));
    let input = if form.input.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&form.input).map_err(|e| {
            PageError::invalid("invalid_json", format!("the input is not JSON: {e}")).back(&back)
        })?
    };
    let mut body = json!({ "action": form.action, "input": input });
    for (field, value) in [
        ("version", form.version.trim()),
        ("correlation_id", form.correlation_id.trim()),
    ] {
        if !value.is_empty() {
            body[field] = json!(value);
        }
    }
    let ran = console
        .call(
            &caller,
            Method::POST,
            &format!("/v1/agents/{}/invoke", segment(&name)),
            ApiBody::Json(body),
        )
        .await
        .map_err(|e| e.back(&back))?;
    let id = ran["execution_id"].as_str().unwrap_or_default();
    Ok(console.done(
        &caller,
        &format!("/console/executions/{}", segment(id)),
        format!(
            "Invoked {name}, action {}: {}.",
            form.action,
            ran["outcome"].as_str().unwrap_or("?")
        ),
    ))
}
