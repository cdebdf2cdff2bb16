//! `corral tenant …` and `corral key …`: tenants (created, listed and shown by operator
//! admins), their policies and usage, and API keys, over `/v1/tenants…` and
//! `/v1/keys…`.
//!
//! A secret the server shows once (a new key's, a new tenant's admin key's) is printed
//! alone on stdout, and what it belongs to on stderr, so `corral key create ci --role
//! developer > ci.key` stores just the secret.

use std::io;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{
    Answer, PageArgs, ServerArgs, conclude, list_pages, not_found, parse_json, print_json,
    print_tenant_usage, send,
};
use super::output::{errln, outln};
use super::table::{Table, items, print_fields, text, time};

/// `corral tenant`.
#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and its first admin key, whose secret is printed once (operator
    /// admins).
    Create {
        /// Its unique name.
        name: String,
        /// Its policy (limits, quotas, plan caps): JSON, or @file, or @- for stdin.
        #[arg(long, value_name = "JSON|@FILE")]
        policy: Option<String>,
    },
    /// List the tenants (operator admins).
    List(PageArgs),
    /// Show a tenant: name, whether it is the operator, its policy (operator admins;
    /// read from the list, which the API has no single-tenant route besides).
    Show {
        /// The tenant's id.
        id: String,
    },
    /// Show a tenant's policy (limits, quotas, plan caps), or replace it with `--set`
    /// (operator admins).
    Policy {
        /// The tenant's id.
        id: String,
        /// The new policy: JSON, or @file, or @- for stdin.
        #[arg(long, value_name = "JSON|@FILE")]
        set: Option<String>,
    },
    /// Show a tenant's use this day and month against its quotas and plan caps.
    Usage {
        /// The tenant's id.
        id: String,
    },
}

/// Runs `corral tenant …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn tenant(args: TenantArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = run_tenant(server, args.command).await;
    conclude(server, answer)
}

async fn run_tenant(server: &ServerArgs, command: TenantCommand) -> anyhow::Result<Answer> {
    Ok(match command {
        TenantCommand::Create { name, policy } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            if let Some(policy) = policy {
                body.insert("policy".into(), parse_json(&policy, "the policy")?);
            }
            Answer::new(
                server
                    .call(Method::POST, &["v1", "tenants"], Some(body.into()))
                    .await?,
                print_created_tenant,
            )
        }
        TenantCommand::List(page) => Answer::new(
            list_pages(server, &["v1", "tenants"], &[], &page).await?,
            print_tenants,
        ),
        TenantCommand::Show { id } => Answer::new(find_tenant(server, &id).await?, print_tenant),
        TenantCommand::Policy { id, set: None } => Answer::new(
            server
                .call(Method::GET, &["v1", "tenants", &id, "policy"], None)
                .await?,
            print_json,
        ),
        TenantCommand::Policy {
            id,
            set: Some(policy),
        } => {
            let policy = parse_json(&policy, "the policy")?;
            Answer::new(
                server
                    .call(Method::PUT, &["v1", "tenants", &id, "policy"], Some(policy))
                    .await?,
                print_json,
            )
        }
        TenantCommand::Usage { id } => Answer::new(
            server
                .call(Method::GET, &["v1", "tenants", &id, "usage"], None)
                .await?,
            print_tenant_usage,
        ),
    })
}

/// Tenant `id`, found by following the list's pages.
async fn find_tenant(server: &ServerArgs, id: &str) -> anyhow::Result<Value> {
    let mut cursor: Option<String> = None;
    loop {
        let mut request = server
            .request(Method::GET, &["v1", "tenants"])?
            .query(&[("limit", "200")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let mut page = send(request).await?;
        if let Value::Array(tenants) = page["items"].take()
            && let Some(tenant) = tenants.into_iter().find(|t| t["id"] == id)
        {
            return Ok(tenant);
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return Err(not_found(format!("tenant {id:?}")));
        }
    }
}

fn print_created_tenant(created: &Value) -> io::Result<()> {
    let tenant = &created["tenant"];
    errln!(
        "created tenant {} ({}) and its admin key {}; the key's secret is shown only now:",
        text(&tenant["name"]),
        text(&tenant["id"]),
        text(&created["admin_key"]["id"])
    );
    outln!("{}", text(&created["secret"]))
}

fn print_tenant(tenant: &Value) -> io::Result<()> {
    print_fields(&[
        ("id", text(&tenant["id"])),
        ("name", text(&tenant["name"])),
        ("operator", text(&tenant["is_operator"])),
        ("created", time(&tenant["created_at"])),
        ("policy", tenant["policy"].to_string()),
    ])
}

fn print_tenants(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["ID", "NAME", "OPERATOR", "CREATED"]);
    for tenant in items(page) {
        table.push(vec![
            text(&tenant["id"]),
            text(&tenant["name"]),
            if tenant["is_operator"] == true {
                "yes".into()
            } else {
                "no".into()
            },
            time(&tenant["created_at"]),
        ]);
    }
    table.print("no tenants")
}

/// `corral key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
    #[command(flatten)]
    server: ServerArgs,
}

/// A key's role.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    /// Reads agents, executions, costs and audit events.
    Viewer,
    /// Also uploads versions and invokes agents.
    Developer,
    /// Also manages policies, keys and (in the operator tenant) tenants.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key and print its secret, once (admins; operator admins for
    /// another tenant with --tenant).
    Create {
        /// A name to know it by.
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
        /// The tenant it belongs to [default: the caller's].
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// List API keys (never their secrets).
    List {
        /// Another tenant's keys (operator admins) [default: the caller's tenant].
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Revoke an API key: it stops working at once.
    Revoke {
        /// The key's id.
        id: String,
        /// The tenant it belongs to (operator admins) [default: the caller's].
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
}

/// Runs `corral key …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn key(args: KeyArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = run_key(server, args.command).await;
    conclude(server, answer)
}

async fn run_key(server: &ServerArgs, command: KeyCommand) -> anyhow::Result<Answer> {
    Ok(match command {
        KeyCommand::Create { name, role, tenant } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            body.insert("role".into(), role.name().into());
            if let Some(tenant) = tenant {
                body.insert("tenant_id".into(), tenant.into());
            }
            Answer::new(
                server
                    .call(Method::POST, &["v1", "keys"], Some(body.into()))
                    .await?,
                print_created_key,
            )
        }
        KeyCommand::List { tenant, page } => {
            let query: Vec<(&str, String)> = tenant.map(|t| ("tenant_id", t)).into_iter().collect();
            Answer::new(
                list_pages(server, &["v1", "keys"], &query, &page).await?,
                print_keys,
            )
        }
        KeyCommand::Revoke { id, tenant } => {
            let mut request = server.request(Method::DELETE, &["v1", "keys", &id])?;
            if let Some(tenant) = tenant {
                request = request.query(&[("tenant_id", tenant)]);
            }
            Answer::new(send(request).await?, |key| {
                outln!(
                    "revoked key {} ({}) at {}",
                    text(&key["id"]),
                    text(&key["name"]),
                    time(&key["revoked_at"])
                )
            })
        }
    })
}

fn print_created_key(created: &Value) -> io::Result<()> {
    let key = &created["key"];
    errln!(
        "created key {} ({}, {}) for tenant {}; its secret is shown only now:",
        text(&key["id"]),
        text(&key["name"]),
        text(&key["role"]),
        text(&key["tenant_id"])
    );
    outln!("{}", text(&created["secret"]))
}

fn print_keys(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "PREFIX",
        "CREATED",
        "LAST USED",
        "REVOKED",
    ]);
    for key in items(page) {
        table.push(vec![
            text(&key["id"]),
            text(&key["name"]),
            text(&key["role"]),
            text(&key["prefix"]),
            time(&key["created_at"]),
            time(&key["last_used_at"]),
            time(&key["revoked_at"]),
        ]);
    }
    table.print("no keys")
}
