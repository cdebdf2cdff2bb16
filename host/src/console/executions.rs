//! Executions: the list, with the API's filters in the page's URL (so a filtered view
//! can be bookmarked and shared) and cursor paging; and one execution — outcome, usage,
//! cost, logs, capability use and denials, model calls, and its call tree.

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::Caller;
use super::{Console, Page, query, segment};
use crate::runtime::Outcome;

/// The list's filters: the API's own parameters, as the page's query string.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Filters {
    agent: String,
    outcome: String,
    correlation_id: String,
    /// `datetime-local` (UTC) or RFC 3339.
    since: String,
    until: String,
    cursor: String,
}

/// A time from a `datetime-local` field (`2026-12-05T09:18`, taken as UTC) as RFC 3339;
/// anything else is passed on for the API to accept or refuse.
pub fn rfc3339(time: &str) -> String {
    let time = time.trim();
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(time, format) {
            return t
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
    }
    time.to_string()
}

/// `GET /console/executions?agent=&outcome=&correlation_id=&since=&until=&cursor=`.
pub async fn list(
    State(console): State<Console>,
    caller: Caller,
    Query(filters): Query<Filters>,
) -> Page {
    let mut api = filters.clone();
    api.since = rfc3339(&filters.since);
    api.until = rfc3339(&filters.until);
    let executions = console
        .get(&caller, &format!("/v1/executions{}", query(&api)))
        .await?;
    let next = executions["next_cursor"].as_str().map(|cursor| {
        let mut next = filters.clone();
        next.cursor = cursor.into();
        format!("/console/executions{}", query(&next))
    });
    Ok(console.render(
        &caller,
        "executions.html",
        "executions",
        json!({
            "items": executions["items"],
            "next": next,
            "filters": filters,
            "outcomes": Outcome::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /console/executions/{id}`.
pub async fn show(State(console): State<Console>, caller: Caller, Path(id): Path<String>) -> Page {
    let execution = console
        .get(&caller, &format!("/v1/executions/{}", segment(&id)))
        .await?;
    let root = execution["root_execution_id"]
        .as_str()
        .unwrap_or(&id)
        .to_string();
    let family = console
        .get(
            &caller,
            &format!("/v1/executions?root={}&limit=200", segment(&root)),
        )
        .await?;
    let members = family["items"].as_array().cloned().unwrap_or_default();
    let tree = if members.len() > 1 {
        call_tree(&members, None)
    } else {
        Vec::new()
    };
    Ok(console.render(
        &caller,
        "execution.html",
        "executions",
        json!({ "execution": execution, "tree": tree, "tree_truncated": family["next_cursor"].is_string() }),
    ))
}

/// The executions under `parent` (the roots for `None`), each with its `children`,
/// oldest first.
fn call_tree(members: &[Value], parent: Option<&str>) -> Vec<Value> {
    let mut level: Vec<Value> = members
        .iter()
        .filter(|m| m["parent_execution_id"].as_str() == parent)
        .map(|m| {
            json!({
                "id": m["id"],
                "agent": m["agent"],
                "action": m["action"],
                "outcome": m["outcome"],
                "cost": m["cost"],
                "started_at": m["started_at"],
                "children": call_tree(members, m["id"].as_str()),
            })
        })
        .collect();
    level.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_local_value_is_read_as_utc() {
        assert_eq!(rfc3339("2026-12-05T09:18"), "2026-12-05T09:18:00Z");
        assert_eq!(rfc3339("2026-12-05T09:18:07"), "2026-12-05T09:18:07Z");
        assert_eq!(
            rfc3339("2026-12-05T09:18:00+01:00"),
            "2026-12-05T09:18:00+01:00"
        );
        assert_eq!(rfc3339(""), "");
    }

    #[test]
    fn a_call_tree_nests_callees_under_their_callers() {
        let members = vec![
            json!({"id": "c", "parent_execution_id": "b", "started_at": "3"}),
            json!({"id": "a", "started_at": "1"}),
            json!({"id": "b", "parent_execution_id": "a", "started_at": "2"}),
            json!({"id": "d", "parent_execution_id": "a", "started_at": "4"}),
        ];
        let tree = call_tree(&members, None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0]["id"], "a");
        let children = tree[0]["children"].as_array().unwrap();
        assert_eq!(children[0]["id"], "b");
        assert_eq!(children[1]["id"], "d");
        assert_eq!(children[0]["children"][0]["id"], "c");
    }
}
