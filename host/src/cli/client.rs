//! The client side of the command line: how the commands that talk to a running `corral
//! serve` find it ([`ServerArgs`]: flags, `CORRAL_URL`/`CORRAL_KEY`, or a profile of
//! [`super::profiles`]), send requests ([`send`]), and end ([`Answer`], [`Exit`]).
//!
//! Every such command prints a summary for people (aligned tables, `key: value` lines), or
//! with `--json` the server's JSON as it answered it, and ends with one of the statuses
//! of [`Exit`]. `corral task` keeps its own statuses (see [`super::tasks`]).

use std::io;
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::output::{errln, outln};
use super::profiles::Profiles;
use super::run::read_input;

pub use super::agents::{AgentArgs, agent};
pub use super::tenants::{TenantArgs, tenant};

/// The server asked when neither a flag, the environment nor a profile names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
// After the subcommand's own options in `--help`, rather than among them.
#[command(next_display_order = 1000)]
pub struct ServerArgs {
    /// The server's base URL [default: the profile's, else http://127.0.0.1:8080].
    #[arg(long, env = "CORRAL_URL", global = true)]
    url: Option<String>,
    /// An API key (`Authorization: Bearer`) [default: the profile's]. Prefer
    /// CORRAL_KEY or a profile: a flag is visible in the process list.
    #[arg(long, env = "CORRAL_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// The profile of ~/.config/corral/config.toml to use for what --url and --key do
    /// not give [default: the file's `default`].
    #[arg(long, env = "CORRAL_PROFILE", global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    /// The URL and key, once worked out.
    #[arg(skip)]
    resolved: OnceLock<Endpoint>,
}

/// The server's URL, the key to send it, and one client for every request of the
/// command (so following pages or polling reuses its connection).
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl ServerArgs {
    /// Whether `--json` asked for the server's JSON as is.
    pub(super) fn json(&self) -> bool {
        self.json
    }

    /// The URL and key: each from its flag, else its environment variable, else the
    /// profile (`--profile`, `CORRAL_PROFILE`, else the file's default), else the default
    /// URL and no key. The profile file is only read when something is left to find.
    fn endpoint(&self) -> anyhow::Result<&Endpoint> {
        if let Some(endpoint) = self.resolved.get() {
            return Ok(endpoint);
        }
        let wanted = self.profile.as_deref();
        let profile = if wanted.is_some() || self.url.is_none() || self.key.is_none() {
            Profiles::load()?.pick(wanted)?
        } else {
            None
        };
        let endpoint = Endpoint {
            url: self
                .url
                .clone()
                .or_else(|| profile.as_ref().map(|p| p.url.clone()))
                .unwrap_or_else(|| DEFAULT_URL.to_string()),
            key: self
                .key
                .clone()
                .or_else(|| profile.as_ref().map(|p| p.key.clone())),
            client: reqwest::Client::new(),
        };
        Ok(self.resolved.get_or_init(|| endpoint))
    }

    /// A request to the path made of `segments` under the server's URL (each segment
    /// percent-encoded, so a name or id cannot reach another route), with the API key.
    pub(super) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let endpoint = self.endpoint()?;
        let mut url = reqwest::Url::parse(&endpoint.url)
            .with_context(|| format!("{:?} is not a URL", endpoint.url))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{:?} cannot be a base URL", endpoint.url))?
            .pop_if_empty()
            .extend(segments);
        let key = endpoint.key.as_deref().context(
            "no API key: pass --key, set CORRAL_KEY, or save a profile with `corral profile set`",
        )?;
        Ok(endpoint.client.request(method, url).bearer_auth(key))
    }

    /// Sends a request with an optional JSON body; see [`send`].
    pub(super) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.request(method, segments)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }
}

/// An error the API answered: its status, code and message. The commands exit with
/// [`Exit::Refused`] for it, and [`Exit::Failed`] for every other error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The API's error code, e.g. `not_found`.
    pub code: String,
    /// The API's message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Sends `request` and returns the JSON body of a success (`Null` when it has none); an
/// API error becomes an [`ApiFailure`] naming its status, code and message (`404
/// not_found: …`).
pub(super) async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let (client, request) = request.build_split();
    let request = request.context("building the request")?;
    let url = request.url().clone();
    let response = client
        .execute(request)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) if !status.is_success() => Value::Null,
            Err(_) => anyhow::bail!("{url} answered {status} with a body that is not JSON"),
        }
    };
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => Err(ApiFailure {
            status: status.as_u16(),
            code: code.into(),
            message: message.into(),
        }
        .into()),
        // Not this API's error body: a proxy's page, or another server.
        _ => {
            anyhow::bail!("{url} answered {status}, without an API error (is it a corral server?)")
        }
    }
}

/// The exit statuses of the client commands (all but `corral task`, which has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// The request succeeded (for `invoke`: and the agent succeeded).
    Ok = 0,
    /// The server refused the request: its status, code and message are printed; or
    /// the thing asked for does not exist (`kv get`, `config get KEY`, `tenant show`).
    Refused = 1,
    /// Bad usage (a wrong flag, an unreadable file, invalid JSON, no key), or the
    /// server could not be reached or did not answer as the API does.
    Failed = 2,
    /// `invoke`: the agent ran (and was recorded), but did not succeed.
    NotSucceeded = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Prints `error: …` and returns the status for it: [`Exit::Refused`] for an API error,
/// [`Exit::Failed`] for anything else.
pub(super) fn fail(e: &anyhow::Error) -> ExitCode {
    errln!("error: {e:#}");
    if e.downcast_ref::<ApiFailure>().is_some() {
        Exit::Refused.into()
    } else {
        Exit::Failed.into()
    }
}

/// A refusal the client makes itself, as the API would: for a thing that is not found
/// by a lookup the API has no route for (`kv get`, `tenant show`).
pub(super) fn not_found(what: impl std::fmt::Display) -> anyhow::Error {
    ApiFailure {
        status: 404,
        code: "not_found".into(),
        message: format!("{what} was not found"),
    }
    .into()
}

/// Prints an answer for people.
pub(super) type Printer = fn(&Value) -> io::Result<()>;

/// What a command answered: the server's JSON, how to show it to people, and how the
/// command ends.
pub(super) struct Answer {
    /// The server's JSON (printed as is with `--json`; nothing when `Null`).
    pub value: Value,
    /// What people are shown, when it is not `value` (a deletion answers nothing, but
    /// people are told what was deleted).
    pub view: Option<Value>,
    /// How people see it.
    pub people: Printer,
    /// The exit status.
    pub exit: Exit,
}

impl Answer {
    /// An answer that ends with [`Exit::Ok`].
    pub(super) fn new(value: Value, people: Printer) -> Answer {
        Answer {
            value,
            view: None,
            people,
            exit: Exit::Ok,
        }
    }

    /// An answer with no body (`204`), of which people see `view`.
    pub(super) fn done(view: Value, people: Printer) -> Answer {
        Answer {
            view: Some(view),
            ..Answer::new(Value::Null, people)
        }
    }
}

/// Prints the answer (or the error) and returns the exit status. The error is only the
/// output's (see [`super::output::status`]).
pub(super) fn conclude(
    server: &ServerArgs,
    answer: anyhow::Result<Answer>,
) -> io::Result<ExitCode> {
    match answer {
        Ok(answer) => {
            if server.json {
                print_json(&answer.value)?;
            } else {
                (answer.people)(answer.view.as_ref().unwrap_or(&answer.value))?;
            }
            Ok(answer.exit.into())
        }
        Err(e) => Ok(fail(&e)),
    }
}

/// Prints `value` as pretty JSON, or nothing for `Null` (an answer with no body).
pub(super) fn print_json(value: &Value) -> io::Result<()> {
    if value.is_null() {
        return Ok(());
    }
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    )
}

/// Paging of a list command.
#[derive(Debug, Clone, Args)]
pub(super) struct PageArgs {
    /// Items per page, 1 to 200 [default: the server's, 50].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Follow the pages to the end (with --json, one `{"items": [...]}` of them all).
    #[arg(long)]
    all: bool,
}

/// Lists the items at `segments` with `query`: one page, or with `--all` every page
/// followed to the end as one `{"items": [...]}`. When a page is left out, people are
/// told on stderr.
pub(super) async fn list_pages(
    server: &ServerArgs,
    segments: &[&str],
    query: &[(&str, String)],
    page: &PageArgs,
) -> anyhow::Result<Value> {
    let mut query = query.to_vec();
    if let Some(limit) = page.limit {
        query.push(("limit", limit.to_string()));
    }
    // A cursor in `query` is where the first page starts.
    let mut cursor = query
        .iter()
        .position(|(name, _)| *name == "cursor")
        .map(|at| query.remove(at).1);
    let mut items = Vec::new();
    loop {
        let mut request = server.request(Method::GET, segments)?.query(&query);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let mut answer = send(request).await?;
        cursor = answer["next_cursor"].as_str().map(str::to_string);
        if !page.all {
            if cursor.is_some() && !server.json {
                errln!("more on the next page: pass --all to list every page");
            }
            return Ok(answer);
        }
        if let Value::Array(page) = answer["items"].take() {
            items.extend(page);
        }
        if cursor.is_none() {
            return Ok(json!({ "items": items }));
        }
    }
}

/// The query pairs of the filters that are set.
pub(super) fn filters<'a>(pairs: &[(&'a str, &Option<String>)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (*name, v.clone())))
        .collect()
}

/// JSON text, `@FILE` or `@-` (stdin), parsed; `what` names it in the error.
pub(super) fn parse_json(text: &str, what: &str) -> anyhow::Result<Value> {
    let text = read_input(text)?;
    serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))
}

pub(super) fn print_agent_usage(usage: &Value) -> io::Result<()> {
    outln!(
        "agent {} (as of {})",
        usage["agent"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    )?;
    print_scope(&usage["usage"])?;
    outln!("tenant (all its agents together)")?;
    print_scope(&usage["tenant"])?;
    Ok(())
}

pub(super) fn print_tenant_usage(usage: &Value) -> io::Result<()> {
    outln!(
        "tenant {} (as of {})",
        usage["tenant_id"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    )?;
    print_scope(&usage["usage"])?;
    let caps = &usage["caps"];
    for name in ["agents", "versions", "total_component_bytes"] {
        outln!(
            "  {name}: {} of {}",
            caps[name]["used"],
            limit_text(&caps[name]["limit"])
        )?;
    }
    outln!("  max component bytes: {}", caps["max_component_bytes"])?;
    Ok(())
}

fn print_scope(scope: &Value) -> io::Result<()> {
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let used = &scope["used"][period];
        outln!(
            "  {label}: {} invocations, {} fuel, ${}",
            used["invocations"],
            used["fuel"],
            used["dollars"].as_str().unwrap_or("?")
        )?;
    }
    for budget in scope["budgets"].as_array().into_iter().flatten() {
        outln!(
            "  budget {}: {} used of {}, {} left{}; resets {}",
            budget["budget"].as_str().unwrap_or("?"),
            plain(&budget["used"]),
            plain(&budget["limit"]),
            plain(&budget["remaining"]),
            if budget["exhausted"] == true {
                " (EXHAUSTED)"
            } else {
                ""
            },
            budget["resets_at"].as_str().unwrap_or("?")
        )?;
    }
    outln!(
        "  concurrency: {} running of {}",
        scope["concurrency"]["in_flight"],
        limit_text(&scope["concurrency"]["limit"])
    )?;
    let rate = &scope["rate"];
    if rate.is_object() {
        outln!(
            "  rate: {} tokens of {} ({} per {})",
            rate["tokens_available"],
            rate["burst"],
            rate["requests"],
            plain(&rate["per"])
        )?;
    }
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let denials = &scope["denials"][period];
        if let Some(map) = denials.as_object().filter(|m| !m.is_empty()) {
            let list: Vec<String> = map.iter().map(|(code, n)| format!("{code} {n}")).collect();
            outln!("  denied {label}: {}", list.join(", "))?;
        }
    }
    Ok(())
}

fn plain(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn limit_text(value: &Value) -> String {
    if value.is_null() {
        "no limit".into()
    } else {
        plain(value)
    }
}
