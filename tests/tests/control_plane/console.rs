//! The web console (`/console`): its cookie and CSRF defences over plain HTTP, and the
//! operator's path through it in a real headless Chromium driven over WebDriver.
//!
//! The browser test needs `chromium` and `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which `./scripts/test` installs). With `CORRAL_CONSOLE_SCREENSHOTS`
//! set to a directory it also saves 1280×800 PNGs of the main pages there
//! (`scripts/console-screenshots` writes `docs/console/`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, TEXT_STATS};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

crate::on_both_backends!(
    sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_keys,
    a_post_without_the_session_s_csrf_token_or_from_another_origin_changes_nothing,
    a_viewer_s_change_is_refused_by_the_api_and_audited,
);

/// A client that shows redirects instead of following them, and keeps no cookies: each
/// request says which session it carries.
fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Signs in with `key` as a browser on this origin would; returns the `Cookie` header.
async fn sign_in(app: &TestApp, key: &str) -> String {
    let response = browserless()
        .post(format!("{}/console/sign-in", app.url))
        .header("origin", &app.url)
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(response.headers());
    cookie.split(';').next().unwrap().to_string()
}

fn set_cookie(headers: &HeaderMap) -> String {
    headers
        .get(SET_COOKIE)
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_string()
}

/// A console page's body, with the session `cookie`.
async fn page(app: &TestApp, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = browserless()
        .get(format!("{}{path}", app.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("the page has a form");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let http = browserless();
    let form = http
        .get(format!("{}/console", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(form.headers()["cache-control"], "no-store");
    assert!(
        form.text()
            .await
            .unwrap()
            .contains(r#"<label for="key">API key</label>"#)
    );

    let refused = http
        .post(format!("{}/console/sign-in", app.url))
        .header("origin", &app.url)
        .form(&[("key", "crl_not_a_real_key_at_all_0123456789abcdef")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    let body = refused.text().await.unwrap();
    assert!(body.contains("The key was not accepted"), "{body}");
    assert!(body.contains("unauthenticated"), "{body}");

    let accepted = http
        .post(format!("{}/console/sign-in", app.url))
        .header("origin", &app.url)
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert_eq!(accepted.headers()[LOCATION], "/console");
    let cookie = set_cookie(accepted.headers());
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("corral_console="), "{cookie}");
    assert!(
        !attributes[0].contains(ADMIN_KEY),
        "the cookie is a session id, not the key"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attributes.contains(&attribute), "{attribute} in {cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP gets no Secure cookie: {cookie}"
    );
    let behind_tls = http
        .post(format!("{}/console/sign-in", app.url))
        .header("origin", "https://corral.example")
        .header("host", "corral.example")
        .header("x-forwarded-proto", "https")
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(behind_tls.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(behind_tls.headers()).contains("; Secure"));

    // The session works, and signing out ends it here, not only in the browser.
    let session = attributes[0].to_string();
    let (status, overview) = page(&app, &session, "/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(overview.contains("bootstrap admin"), "{overview}");
    let out = http
        .post(format!("{}/console/sign-out", app.url))
        .header("cookie", &session)
        .header("origin", &app.url)
        .form(&[("csrf", csrf_of(&overview))])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(out.headers()).contains("Max-Age=0"));
    let after = http
        .get(format!("{}/console/agents", app.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()[LOCATION], "/console");

    // A sign-in posted from another site is refused before the key is looked at.
    let forged = http
        .post(format!("{}/console/sign-in", app.url))
        .header("origin", "http://evil.example")
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());
    app.stop().await;
}

async fn a_post_without_the_session_s_csrf_token_or_from_another_origin_changes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let cookie = sign_in(&app, ADMIN_KEY).await;
    let (_, agents) = page(&app, &cookie, "/console/agents").await;
    let token = csrf_of(&agents);
    let create = |fields: Vec<(&'static str, String)>, origin: &str| {
        browserless()
            .post(format!("{}/console/agents", app.url))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&fields)
    };
    let attempts = [
        (
            "no token",
            vec![("name", "nope".to_string())],
            app.url.clone(),
        ),
        (
            "a wrong token",
            vec![("name", "nope".into()), ("csrf", "x".repeat(token.len()))],
            app.url.clone(),
        ),
        (
            "another origin",
            vec![("name", "nope".into()), ("csrf", token.clone())],
            "http://evil.example".into(),
        ),
    ];
    for (what, fields, origin) in attempts {
        let response = create(fields, &origin).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let body = response.text().await.unwrap();
        assert!(body.contains("csrf_failed"), "{what}: {body}");
    }
    let listed = app.get("/v1/agents", ADMIN_KEY).await.ok(200);
    assert_eq!(listed["items"], json!([]), "nothing was created");

    // Another session's token is not this session's.
    let other = sign_in(&app, ADMIN_KEY).await;
    let (_, other_page) = page(&app, &other, "/console/agents").await;
    let response = create(
        vec![("name", "nope".into()), ("csrf", csrf_of(&other_page))],
        &app.url,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let response = create(
        vec![("name", "made-here".into()), ("csrf", token)],
        &app.url,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/console/agents/made-here");
    app.get("/v1/agents/made-here", ADMIN_KEY).await.ok(200);
    app.stop().await;
}

async fn a_viewer_s_change_is_refused_by_the_api_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("stats", TEXT_STATS).await;
    let viewer = app.key("viewer").await;
    let cookie = sign_in(&app, &viewer).await;
    let (status, agent) = page(&app, &cookie, "/console/agents/stats").await;
    assert_eq!(status, StatusCode::OK, "viewers read");
    let response = browserless()
        .post(format!("{}/console/agents/stats/pause", app.url))
        .header("cookie", &cookie)
        .header("origin", &app.url)
        .form(&[("csrf", csrf_of(&agent))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("agent.pause needs the developer role; this key is a viewer"),
        "the API's own message: {body}"
    );
    assert_eq!(
        app.get("/v1/agents/stats", ADMIN_KEY).await.ok(200)["status"],
        "active"
    );
    let denied = app
        .get("/v1/audit?action=agent.pause", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(denied["items"][0]["result"], "denied", "{denied:#}");
    let keys = app.get("/v1/keys", ADMIN_KEY).await.ok(200);
    let viewer_key = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "viewer")
        .unwrap()["id"]
        .clone();
    assert_eq!(denied["items"][0]["actor_key_id"], viewer_key);
    // The browser's address, not the console's, is on the record.
    assert_eq!(denied["items"][0]["client_addr"], "127.0.0.1");

    // A revoked key ends its console session at the next page.
    let id = viewer_key.as_str().unwrap();
    app.send(
        reqwest::Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await
    .ok(200);
    let (status, _) = page(&app, &cookie, "/console/agents").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_what_the_api_answers() {
    let app = spawn_app(Backend::Sqlite).await;
    app.agent_with("stats", TEXT_STATS).await;
    let input = json!({ "action": "stats", "input": { "text": "Hi there." } });
    let ran = app.invoke("stats", ADMIN_KEY, input.clone()).await.ok(200);
    let task = app
        .post("/v1/agents/stats/tasks", ADMIN_KEY, input)
        .await
        .ok(202);
    let workflow = json!({
        "input": { "text": "a b c" },
        "steps": [{ "name": "count", "agent": "stats", "action": "stats",
                    "input": { "text": "$.input.text" } }],
    });
    let workflow = app.post("/v1/workflows", ADMIN_KEY, workflow).await.ok(202);
    let cookie = sign_in(&app, ADMIN_KEY).await;
    let execution = ran["execution_id"].as_str().unwrap();
    let (task, workflow) = (
        task["id"].as_str().unwrap(),
        workflow["id"].as_str().unwrap(),
    );
    let (execution_page, task_page, workflow_page) = (
        format!("/console/executions/{execution}"),
        format!("/console/tasks/{task}"),
        format!("/console/workflows/{workflow}"),
    );
    for (path, shows) in [
        ("/console", "Latest executions"),
        ("/console/agents", "Create an agent"),
        ("/console/agents/stats", "Policy and grants"),
        ("/console/executions?outcome=succeeded", execution),
        (execution_page.as_str(), "Capabilities"),
        ("/console/costs?period=week", "By agent"),
        ("/console/usage", "Plan caps"),
        ("/console/audit?resource_type=agent", "agent.create"),
        ("/console/keys", "bootstrap admin"),
        ("/console/tasks?state=queued", "Tasks"),
        (task_page.as_str(), task),
        ("/console/workflows", workflow),
        (workflow_page.as_str(), "count"),
    ] {
        let (status, html) = page(&app, &cookie, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(html.contains(shows), "{path} shows {shows:?}: {html}");
    }

    // An API refusal of a page is shown with the API's status, code and message.
    let (status, html) = page(&app, &cookie, "/console/executions?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("invalid_query"), "{html}");
    let (status, html) = page(&app, &cookie, "/console/agents/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("not_found"), "{html}");

    // A new key's secret is shown on the page that created it.
    let (_, keys) = page(&app, &cookie, "/console/keys").await;
    let created = browserless()
        .post(format!("{}/console/keys", app.url))
        .header("cookie", &cookie)
        .header("origin", &app.url)
        .form(&[
            ("csrf", csrf_of(&keys)),
            ("name", "ci".into()),
            ("role", "viewer".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let html = created.text().await.unwrap();
    let at = html
        .find("readonly value=\"crl_")
        .expect("the secret is shown");
    let secret = &html[at + "readonly value=\"".len()..];
    let secret = &secret[..secret.find('"').unwrap()];
    app.get("/v1/agents", secret).await.ok(200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_console_turned_off_only_the_api_answers() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.console = false).await;
    let response = browserless()
        .get(format!("{}/console", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    app.get("/v1/agents", ADMIN_KEY).await.ok(200);
    app.stop().await;
}

/// `chromedriver` on a free port, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (install Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        for _ in 0..100 {
            if reqwest::get(&status).await.is_ok() {
                return Driver { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {url}");
    }

    /// A headless Chromium window of 1280×800.
    async fn browser(&self) -> Client {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,800", "--hide-scrollbars"],
            }),
        );
        let browser = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        // The window's size includes the browser's own bars: make the page 1280×800.
        let (_, outer) = browser.get_window_size().await.unwrap();
        let inner = browser
            .execute("return window.innerHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap();
        let height = outer + 800 - inner;
        browser.set_window_size(1280, height as u32).await.unwrap();
        browser
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The browser, on the console of `app`.
struct Operator<'a> {
    browser: Client,
    app: &'a TestApp,
    screenshots: Option<std::path::PathBuf>,
}

impl Operator<'_> {
    async fn open(&self, path: &str) {
        self.browser
            .goto(&format!("{}{path}", self.app.url))
            .await
            .unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.browser.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks what submits a form or follows a link, and waits for the next page: the
    /// click returns before the browser has left this one.
    async fn click(&self, css: &str) {
        let page = self.browser.find(Locator::Css("html")).await.unwrap();
        self.browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
        for _ in 0..600 {
            if page.tag_name().await.is_err() {
                self.browser
                    .wait()
                    .for_element(Locator::Css("main"))
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} did not lead to another page");
    }

    /// The text of the page's `<main>`.
    async fn text(&self) -> String {
        self.browser
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn path(&self) -> String {
        self.browser.current_url().await.unwrap().path().to_string()
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            let png = self.browser.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_uploads_invokes_finds_the_execution_and_sees_a_denial() {
    let app = spawn_app(Backend::Sqlite).await;
    let viewer = app.key("viewer").await;
    let driver = Driver::start().await;
    let operator = Operator {
        browser: driver.browser().await,
        app: &app,
        screenshots: std::env::var_os("CORRAL_CONSOLE_SCREENSHOTS").map(|dir| {
            std::fs::create_dir_all(&dir).unwrap();
            dir.into()
        }),
    };

    // A wrong key is refused with the reason; the right one signs in.
    operator.open("/console").await;
    operator.screenshot("sign-in").await;
    operator
        .fill("#key", "crl_wrong_key_0123456789abcdef0123456789")
        .await;
    operator.click("form button[type=submit]").await;
    let refused = operator.text().await;
    assert!(refused.contains("The key was not accepted"), "{refused}");
    operator.fill("#key", ADMIN_KEY).await;
    operator.click("form button[type=submit]").await;
    assert!(operator.text().await.contains("Overview"));

    // Create an agent, upload text-stats (active), then echo held back, activate it,
    // and roll back to text-stats.
    operator.open("/console/agents").await;
    operator.fill("#name", "stats").await;
    operator.fill("#description", "Counts words").await;
    operator.click("form.stack button").await;
    assert_eq!(operator.path().await, "/console/agents/stats");
    upload(&operator, TEXT_STATS, true).await;
    assert!(operator.text().await.contains("uploaded (active)"));
    upload(&operator, ECHO, false).await;
    assert!(operator.text().await.contains("uploaded (not active)"));
    operator
        .click("button[aria-label='Activate version 0.1.0']")
        .await;
    assert!(
        operator
            .text()
            .await
            .contains("Version 0.1.0 is now active")
    );
    let text_stats = app
        .get("/v1/agents/stats/versions", ADMIN_KEY)
        .await
        .ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["metadata"]["name"] == "text-stats")
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    operator
        .click(&format!(
            "button[aria-label='Activate version {text_stats}']"
        ))
        .await;
    assert!(
        operator
            .text()
            .await
            .contains(&format!("Version {text_stats} is now active"))
    );
    operator.screenshot("agent").await;

    // Invoke it from its page; the execution opens.
    operator
        .fill(
            "#input",
            r#"{"text": "Corral runs agents. Each run is sandboxed!"}"#,
        )
        .await;
    operator.fill("#correlation_id", "console-1").await;
    operator.click("form[action$='/invoke'] button").await;
    let ran = operator.text().await;
    assert!(ran.contains("succeeded"), "{ran}");
    assert!(ran.contains("\"words\": 7"), "{ran}");
    let execution = operator.path().await;
    assert!(execution.starts_with("/console/executions/"), "{execution}");
    operator.screenshot("execution").await;

    // Find it in the list with filters, and open it.
    operator.open("/console/executions").await;
    operator.fill("#f-agent", "stats").await;
    operator.fill("#f-corr", "console-1").await;
    operator.click("form.filters button").await;
    let url = operator.browser.current_url().await.unwrap();
    assert!(
        url.query().unwrap().contains("correlation_id=console-1"),
        "{url}"
    );
    let rows = operator
        .browser
        .find_all(Locator::Css("main table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one execution matches");
    operator.screenshot("executions").await;
    operator.click("main table tbody tr a").await;
    assert_eq!(operator.path().await, execution);

    if operator.screenshots.is_some() {
        // A little more history, so the pictures show what the pages are for.
        for text in [
            "One.",
            "Two words.",
            "Three more words. And a second sentence.",
        ] {
            let input = json!({ "action": "stats", "input": { "text": text } });
            app.invoke("stats", ADMIN_KEY, input).await.ok(200);
        }
        let task = json!({ "action": "stats", "input": { "text": "Later, please." } });
        app.post("/v1/agents/stats/tasks", ADMIN_KEY, task)
            .await
            .ok(202);
        for (name, path) in [
            ("overview", "/console"),
            ("costs", "/console/costs"),
            ("usage", "/console/usage"),
            ("keys", "/console/keys"),
            ("tasks", "/console/tasks"),
        ] {
            operator.open(path).await;
            operator.screenshot(name).await;
        }
    }

    // A viewer may look but not act: the API's refusal shows, and nothing changes.
    operator.click("header form button").await;
    operator.fill("#key", &viewer).await;
    operator.click("form button[type=submit]").await;
    operator.open("/console/agents/stats").await;
    let before = app
        .get("/v1/agents/stats/versions", ADMIN_KEY)
        .await
        .ok(200);
    upload(&operator, ECHO, true).await;
    let refusal = operator.text().await;
    assert!(refusal.contains("Refused: 403"), "{refusal}");
    assert!(
        refusal.contains("version.upload needs the developer role; this key is a viewer"),
        "{refusal}"
    );
    operator.open("/console/agents/stats").await;
    operator
        .click("button[aria-label='Activate version 0.1.0']")
        .await;
    assert!(
        operator
            .text()
            .await
            .contains("version.activate needs the developer role")
    );
    let after = app
        .get("/v1/agents/stats/versions", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(before, after, "nothing changed");

    // The denials are on the audit trail page.
    operator.open("/console/audit").await;
    operator.fill("#f-action", "version.upload").await;
    operator.click("form.filters button").await;
    let trail = operator.text().await;
    assert!(trail.contains("denied"), "{trail}");
    let denied_rows = operator
        .browser
        .find_all(Locator::Css("main table tbody tr.denied"))
        .await
        .unwrap();
    assert_eq!(denied_rows.len(), 1, "{trail}");
    operator.open("/console/audit").await;
    operator.screenshot("audit").await;

    operator.browser.close().await.unwrap();
    drop(driver);
    app.stop().await;
}

/// Chooses `component` in the agent page's upload form and sends it.
async fn upload(operator: &Operator<'_>, component: &str, activate: bool) {
    let file = operator
        .browser
        .find(Locator::Css("#component"))
        .await
        .unwrap();
    file.send_keys(Path::new(component).to_str().unwrap())
        .await
        .unwrap();
    let checkbox = operator
        .browser
        .find(Locator::Css("#activate"))
        .await
        .unwrap();
    if checkbox.is_selected().await.unwrap() != activate {
        checkbox.click().await.unwrap();
    }
    operator
        .click("form[enctype='multipart/form-data'] button")
        .await;
}
