//! The overview, costs by agent and period (an SVG bar chart drawn here, with the same
//! numbers in a table), and usage against budgets, quotas and plan caps.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::executions::rfc3339;
use super::session::{self, Caller};
use super::{Console, Page, PageError, query, segment};

#[derive(Deserialize)]
pub struct SignedOut {
    signed_out: Option<String>,
}

/// `GET /console`: the overview, or the sign-in form without a session.
pub async fn overview(
    State(console): State<Console>,
    caller: Result<Caller, PageError>,
    Query(note): Query<SignedOut>,
) -> Page {
    let Ok(caller) = caller else {
        return Ok(session::sign_in_page(
            StatusCode::OK,
            None,
            note.signed_out.as_deref(),
        ));
    };
    let agents = console.get(&caller, "/v1/agents?limit=200").await?;
    let recent = console.get(&caller, "/v1/executions?limit=10").await?;
    let costs = console.get(&caller, "/v1/costs").await?;
    Ok(console.render(
        &caller,
        "overview.html",
        "overview",
        json!({
            "agents": agents["items"],
            "more_agents": agents["next_cursor"].is_string(),
            "recent": recent["items"],
            "costs": costs,
        }),
    ))
}

/// `?period=&since=&until=` of the costs page.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CostFilters {
    period: String,
    since: String,
    until: String,
}

/// `GET /console/costs`.
pub async fn costs(
    State(console): State<Console>,
    caller: Caller,
    Query(filters): Query<CostFilters>,
) -> Page {
    let api = CostFilters {
        period: filters.period.clone(),
        since: rfc3339(&filters.since),
        until: rfc3339(&filters.until),
    };
    let report = console
        .get(&caller, &format!("/v1/costs{}", query(&api)))
        .await?;
    let buckets = report["buckets"].as_array().cloned().unwrap_or_default();
    Ok(console.render(
        &caller,
        "costs.html",
        "costs",
        json!({
            "report": report,
            "filters": filters,
            "chart": chart(&buckets),
            "by_agent": by_agent(&buckets),
        }),
    ))
}

/// A dollar string of the API as an exact decimal (0 if it is not one).
fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .and_then(|s| Decimal::from_str(s).ok())
        .unwrap_or_default()
}

/// Each agent's executions and cost over the whole range, most expensive first.
fn by_agent(buckets: &[Value]) -> Vec<Value> {
    let mut totals: BTreeMap<&str, (i64, Decimal)> = BTreeMap::new();
    for bucket in buckets {
        let entry = totals
            .entry(bucket["agent"].as_str().unwrap_or("?"))
            .or_default();
        entry.0 += bucket["executions"].as_i64().unwrap_or(0);
        entry.1 += decimal(&bucket["cost"]);
    }
    let mut rows: Vec<(&str, (i64, Decimal))> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.cmp(&a.1.1));
    rows.into_iter()
        .map(|(agent, (executions, cost))| {
            json!({ "agent": agent, "executions": executions, "cost": format!("{cost:.12}") })
        })
        .collect()
}

/// Colours told apart with colour-blindness too (Okabe and Ito); the legend and the
/// table carry the same information in words.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

const CHART_WIDTH: f64 = 960.0;
const CHART_HEIGHT: f64 = 300.0;
const LEFT: f64 = 110.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 10.0;

/// A stacked bar per period, one segment per agent, as shapes the template draws.
fn chart(buckets: &[Value]) -> Value {
    let mut periods: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    let mut agents: Vec<&str> = Vec::new();
    for bucket in buckets {
        let agent = bucket["agent"].as_str().unwrap_or("?");
        if !agents.contains(&agent) {
            agents.push(agent);
        }
        let cost = decimal(&bucket["cost"]).to_f64().unwrap_or(0.0);
        periods
            .entry(bucket["period_start"].as_str().unwrap_or("?"))
            .or_default()
            .push((agent, cost));
    }
    agents.sort();
    let colour = |agent: &str| {
        let i = agents.iter().position(|a| *a == agent).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let highest = periods
        .values()
        .map(|segments| segments.iter().map(|(_, c)| c).sum::<f64>())
        .fold(0.0, f64::max);
    let plot_height = CHART_HEIGHT - BOTTOM - TOP;
    let scale = if highest > 0.0 {
        plot_height / highest
    } else {
        0.0
    };
    let slot = (CHART_WIDTH - LEFT) / periods.len().max(1) as f64;
    let bar_width = (slot * 0.7).min(60.0);
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, (period, segments)) in periods.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
        let mut y = CHART_HEIGHT - BOTTOM;
        for (agent, cost) in segments {
            let height = cost * scale;
            y -= height;
            bars.push(json!({
                "x": round(x), "y": round(y), "width": round(bar_width), "height": round(height),
                "fill": colour(agent),
                "title": format!("{agent}, {period}: {}", short_dollars(*cost)),
            }));
        }
        // Label every period when they fit, else about twelve of them.
        let every = periods.len().div_ceil(12).max(1);
        if i % every == 0 {
            labels.push(json!({ "x": round(x + bar_width / 2.0), "text": period }));
        }
    }
    let ticks: Vec<Value> = (0..=4)
        .map(|n| {
            let value = highest * n as f64 / 4.0;
            json!({
                "y": round(CHART_HEIGHT - BOTTOM - value * scale),
                "label": short_dollars(value),
            })
        })
        .collect();
    json!({
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": LEFT,
        "baseline": CHART_HEIGHT - BOTTOM, "label_y": CHART_HEIGHT - BOTTOM + 20.0,
        "bars": bars, "labels": labels, "ticks": ticks,
        "legend": agents.iter().map(|a| json!({ "agent": a, "fill": colour(a) })).collect::<Vec<_>>(),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Dollars to three significant digits: `$0.000000122`, `$1.50`.
fn short_dollars(amount: f64) -> String {
    if amount <= 0.0 {
        return "$0".into();
    }
    let places = (2 - amount.log10().floor() as i32).clamp(2, 12) as usize;
    format!("${amount:.places$}")
}

/// `GET /console/usage`: the tenant's use against its budgets, quotas and plan caps,
/// then each agent's.
pub async fn usage(State(console): State<Console>, caller: Caller) -> Page {
    let tenant_id = caller.session.who.tenant_id.clone();
    let mut tenant = console
        .get(
            &caller,
            &format!("/v1/tenants/{}/usage", segment(&tenant_id)),
        )
        .await?;
    with_ratios(&mut tenant["usage"]);
    let agents = console.get(&caller, "/v1/agents?limit=50").await?;
    let mut usages = Vec::new();
    for agent in agents["items"].as_array().into_iter().flatten() {
        let name = agent["name"].as_str().unwrap_or_default();
        let mut usage = console
            .get(&caller, &format!("/v1/agents/{}/usage", segment(name)))
            .await?;
        with_ratios(&mut usage["usage"]);
        usages.push(usage);
    }
    Ok(console.render(
        &caller,
        "usage.html",
        "usage",
        json!({
            "tenant": tenant,
            "agents": usages,
            "more_agents": agents["next_cursor"].is_string(),
        }),
    ))
}

/// Adds `ratio` (used / limit, for a `<meter>`) to each budget of a scope's usage.
fn with_ratios(usage: &mut Value) {
    let number = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0.0)
    };
    if let Some(budgets) = usage["budgets"].as_array_mut() {
        for budget in budgets {
            let limit = number(&budget["limit"]);
            let ratio = if limit > 0.0 {
                (number(&budget["used"]) / limit).min(1.0)
            } else {
                1.0
            };
            budget["ratio"] = json!(ratio);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_amounts_keep_three_significant_digits() {
        assert_eq!(short_dollars(0.0), "$0");
        assert_eq!(short_dollars(1.5), "$1.50");
        assert_eq!(short_dollars(0.000000121919), "$0.000000122");
        assert_eq!(short_dollars(123.456), "$123.46");
    }

    #[test]
    fn a_period_stacks_its_agents_and_the_tallest_fills_the_plot() {
        let buckets = vec![
            json!({"agent": "a", "period_start": "2026-12-01", "cost": "0.000000100000"}),
            json!({"agent": "b", "period_start": "2026-12-01", "cost": "0.000000100000"}),
            json!({"agent": "a", "period_start": "2026-12-02", "cost": "0.000000100000"}),
        ];
        let chart = chart(&buckets);
        let bars = chart["bars"].as_array().unwrap();
        assert_eq!(bars.len(), 3);
        let plot = CHART_HEIGHT - BOTTOM - TOP;
        assert_eq!(
            bars[0]["height"].as_f64().unwrap() + bars[1]["height"].as_f64().unwrap(),
            plot
        );
        assert_eq!(bars[2]["height"].as_f64().unwrap(), plot / 2.0);
        assert_eq!(chart["legend"].as_array().unwrap().len(), 2);
        let totals = by_agent(&buckets);
        assert_eq!(totals[0]["agent"], "a");
        assert_eq!(totals[0]["cost"], "0.000000200000");
    }
}
