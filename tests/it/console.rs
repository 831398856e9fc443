//! The admin web console (issue 13): its security properties over plain HTTP and TLS, a person
//! signed in by an auth proxy's JWT, and the whole product flow driven in Debian's Chromium.

use std::time::Duration;

use apikeys::pb;
use jsonwebtoken::Algorithm;
use tonic::Code;

use crate::{
    harness::*,
    users::{Signer, jwt_config, person},
};

/// A client that keeps the console's session cookie, and sends what a browser sends with a form.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    /// An `authorization` header an auth proxy would add.
    proxy_authorization: Option<String>,
}

impl Browser {
    fn new(base: String, ca: Option<&[u8]>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            // HTTPS as browsers speak it: HTTP/2, where the host is `:authority`, not a header.
            builder = builder.tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()]).http2_prior_knowledge();
        }
        Self { http: builder.build().unwrap(), base, cookie: None, proxy_authorization: None }
    }

    fn keep_cookie(&mut self, response: &reqwest::Response) {
        if let Some(set) = response.headers().get(http::header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
    }

    fn with_headers(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(cookie) = &self.cookie {
            request = request.header(http::header::COOKIE, cookie);
        }
        if let Some(authorization) = &self.proxy_authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        request
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self.with_headers(self.http.get(format!("{}{path}", self.base))).send().await.unwrap();
        self.keep_cookie(&response);
        response
    }

    /// A form post from this console's own page (same origin), or from `origin`.
    async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: &str) -> reqwest::Response {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ORIGIN, origin)
            .body(body.finish());
        let response = self.with_headers(request).send().await.unwrap();
        self.keep_cookie(&response);
        response
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let origin = self.base.clone();
        self.post_from(path, form, &origin).await
    }

    /// A same-origin form post that also sends `headers`.
    async fn post_with(&mut self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.finish());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.with_headers(request).send().await.unwrap()
    }
}

/// A signed-in administrator's browser and the CSRF token of its session.
async fn signed_in(app: &TestApp) -> (Browser, String) {
    let mut browser = Browser::new(format!("http://{}", app.console_addr.unwrap()), None);
    assert_eq!(browser.post("/login", &[("token", &app.admin_token)]).await.status(), 303);
    let token = csrf(&browser.get("/keys").await.text().await.unwrap());
    (browser, token)
}

/// The value of the CSRF field of a page's forms.
fn csrf(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The text of the element with `id` (no nested elements).
fn text_of(html: &str, id: &str) -> String {
    let at = html.find(&format!(r#"id="{id}""#)).unwrap_or_else(|| panic!("no #{id} in {html}"));
    let start = at + html[at..].find('>').unwrap() + 1;
    html[start..start + html[start..].find('<').unwrap()].to_owned()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
}

#[tokio::test]
async fn the_console_guards_sessions_forms_and_pages() {
    let app = TestApp::spawn_with(|config| config.console_idle_timeout_secs = 2).await;
    let base = format!("http://{}", app.console_addr.unwrap());
    let mut browser = Browser::new(base.clone(), None);

    // Not signed in: to the sign-in page. Every page is no-store, unframeable, script from here only.
    let response = browser.get("/keys").await;
    assert_eq!(response.status(), 303);
    assert_eq!(header(&response, "location"), "/login");
    let login = browser.get("/login").await;
    let csp = header(&login, "content-security-policy").to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&login, "cache-control"), "no-store");
    assert_eq!(header(&login, "x-content-type-options"), "nosniff");
    assert_eq!(header(&login, "x-frame-options"), "DENY");
    let page = login.text().await.unwrap();
    let inline = ["<script>", " onclick=", " onload=", " onsubmit=", " onerror=", "javascript:"];
    assert!(!inline.iter().any(|needle| page.contains(needle)), "no inline script or handlers:\n{page}");

    // Wrong token, then a key without the administration permission: refused, no session.
    let response = browser.post("/login", &[("token", "apk_not_a_token")]).await;
    assert_eq!(response.status(), 401);
    assert!(browser.cookie.is_none());
    let reader = app.admin().await.create("Reader", &["read_data"]).await.unwrap().token;
    let response = browser.post("/login", &[("token", &reader)]).await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("does not hold the API Keys administration permission"));
    // A sign-in posted from another site is refused before the token is looked at.
    let response = browser.post_from("/login", &[("token", &app.admin_token)], "https://evil.example").await;
    assert_eq!(response.status(), 403);
    assert!(browser.cookie.is_none());

    // The administrator signs in: an HttpOnly, SameSite=Strict session cookie (no Secure over HTTP).
    let response = browser.post("/login", &[("token", &app.admin_token)]).await;
    assert_eq!(response.status(), 303);
    let cookie = header(&response, "set-cookie").to_owned();
    assert!(
        cookie.starts_with("apikeys_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(&app.admin_token), "the token stays on the server");
    let list = browser.get("/keys").await;
    assert_eq!(list.status(), 200);
    let page = list.text().await.unwrap();
    assert!(page.contains("Reader"), "{page}");
    let token = csrf(&page);

    // State changes need the session's CSRF token and this origin.
    let create = [("display_name", "From the console"), ("description", "d"), ("permissions", "read_data")];
    let response = browser.post("/keys", &create).await;
    assert_eq!(response.status(), 403, "no CSRF token");
    let with_token = [&create[..], &[("csrf", token.as_str())]].concat();
    let wrong = "A".repeat(token.len());
    let forged = [&create[..], &[("csrf", wrong.as_str())]].concat();
    assert_eq!(browser.post("/keys", &forged).await.status(), 403, "a wrong CSRF token");
    assert_eq!(browser.post_from("/keys", &with_token, "https://evil.example").await.status(), 403, "another origin");
    let names = |keys: Vec<pb::ApiKey>| keys.into_iter().map(|k| k.display_name).collect::<Vec<_>>();
    let admin = app.admin().await;
    assert!(
        !names(admin.list(pb::ListApiKeysRequest::default()).await.unwrap().api_keys)
            .contains(&"From the console".to_owned())
    );

    // Created: the credentials, once, on a no-store page; they work.
    let response = browser.post("/keys", &with_token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let page = response.text().await.unwrap();
    let shown = text_of(&page, "cred-token");
    let mut client = app.client().await;
    let principal = authenticate_token(&mut client, &shown, &["read_data"]).await.unwrap();
    assert_eq!(principal.display_name, "From the console");
    // Recorded as done by the key that signed in.
    let key = admin.get(&principal.key_id).await.unwrap();
    assert_eq!(key.created_by.unwrap().r#type(), pb::ActorType::ApiKey);

    // A bad field comes back next to its field.
    let blank = [("display_name", "   "), ("description", ""), ("csrf", token.as_str())];
    let response = browser.post("/keys", &blank).await;
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"id="display_name-error""#) && page.contains(r#"aria-describedby="display_name-error""#),
        "{page}"
    );

    // Idle for longer than the timeout: signed out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = browser.get("/keys").await;
    assert_eq!(response.status(), 303, "an idle session ends");

    // Signing out ends the session for good.
    browser.post("/login", &[("token", &app.admin_token)]).await;
    let old = browser.cookie.clone();
    let token = csrf(&browser.get("/keys").await.text().await.unwrap());
    let response = browser.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(response.status(), 303);
    browser.cookie = old;
    assert_eq!(browser.get("/keys").await.status(), 303, "the old cookie no longer works");
}

#[tokio::test]
async fn a_person_signed_in_by_an_auth_proxy_is_recorded_by_name() {
    let signer = Signer::new(Algorithm::ES256, "ec-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, serde_json::json!({ "keys": [signer.jwk.clone()] }).to_string()).unwrap();
    let app = TestApp::spawn_with(|config| config.jwt = jwt_config(Some(path), "")).await;
    let org = authenticate_token(&mut app.client().await, &app.admin_token, &[]).await.unwrap().org_id;
    let mut browser = Browser::new(format!("http://{}", app.console_addr.unwrap()), None);

    // A person without the administration permission gets a refusal page, and no session.
    let bob = signer.sign(&person("bob", "Bob", &org, &["read_data"]));
    browser.proxy_authorization = Some(format!("Bearer {bob}"));
    let response = browser.get("/keys").await;
    assert_eq!(response.status(), 403);
    assert!(header(&response, "set-cookie").is_empty(), "no session for a non-administrator");

    // The proxy sends the person's JWT with every request: no sign-in page.
    let jwt = signer.sign(&person("ada", "Ada Lovelace", &org, &["api_keys_admin"]));
    browser.proxy_authorization = Some(format!("Bearer {jwt}"));
    let response = browser.get("/keys/new").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Ada Lovelace"), "{page}");
    assert!(!page.contains("Sign out"), "the platform signs people out");
    // She holds no data permission: those boxes are disabled, with the reason.
    assert!(page.contains(r#"value="read_data" disabled"#), "{page}");
    assert!(page.contains("You do not hold this permission"), "{page}");
    let token = csrf(&page);
    let response = browser.post("/keys", &[("display_name", "Ada's key"), ("csrf", &token)]).await;
    assert_eq!(response.status(), 200);
    let id = text_of(&response.text().await.unwrap(), "cred-id");
    let by = app.admin().await.get(&id).await.unwrap().created_by.unwrap();
    assert_eq!((by.r#type(), by.id.as_str(), by.display_name.as_str()), (pb::ActorType::User, "ada", "Ada Lovelace"));
    // Granting what she does not hold is refused by the API, and said at the field.
    let response =
        browser.post("/keys", &[("display_name", "Escalated"), ("permissions", "read_data"), ("csrf", &token)]).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("cannot grant permissions the caller does not hold"));

    // Her session is nothing without her JWT, and nobody else's to use.
    let ada_session = browser.cookie.clone().unwrap();
    browser.proxy_authorization = None;
    assert_eq!(browser.get("/keys").await.status(), 303, "the session holds no credential");
    browser.cookie = Some(ada_session.clone());
    let grace = signer.sign(&person("grace", "Grace Hopper", &org, &["api_keys_admin"]));
    browser.proxy_authorization = Some(format!("Bearer {grace}"));
    let response = browser.get("/keys/new").await;
    assert_eq!(response.status(), 200);
    assert_ne!(browser.cookie.as_ref(), Some(&ada_session), "another person gets a session of their own");
    let page = response.text().await.unwrap();
    assert_ne!(csrf(&page), token, "and a CSRF token of their own");
}

#[tokio::test]
async fn the_list_pages_and_expiry_is_set_and_cleared() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for i in 0..30 {
        admin.create(&format!("Batch {i:02}"), &[]).await.unwrap();
    }
    let (mut browser, token) = signed_in(&app).await;
    // 31 keys (the administrator's too), 25 a page: a next page, then the rest.
    let first = browser.get("/keys?name=&permission=").await.text().await.unwrap();
    let rows = |page: &str| page.matches("<tr data-id=").count();
    assert_eq!(rows(&first), 25);
    let at = first.find(r#"id="next" href=""#).expect("a next page") + r#"id="next" href=""#.len();
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    let second = browser.get(&next).await.text().await.unwrap();
    assert_eq!(rows(&second), 6);
    assert!(!second.contains(r#"id="next""#), "the last page");
    assert!(second.contains("First page"));

    // An expiry typed as a datetime-local field sends it (UTC), then cleared.
    let form = [("display_name", "Expiring"), ("expire_time", "2099-01-31T12:00"), ("csrf", token.as_str())];
    let page = browser.post("/keys", &form).await.text().await.unwrap();
    let id = text_of(&page, "cred-id");
    let key = admin.get(&id).await.unwrap();
    assert_eq!(key.expire_time.unwrap().seconds, 4_073_544_000, "2099-01-31T12:00:00Z");
    let edit = browser.get(&format!("/keys/{id}/edit")).await.text().await.unwrap();
    assert!(edit.contains(r#"value="2099-01-31T12:00""#), "{edit}");
    let form =
        [("display_name", "Expiring"), ("expire_time", ""), ("etag", key.etag.as_str()), ("csrf", token.as_str())];
    assert_eq!(browser.post(&format!("/keys/{id}/edit"), &form).await.status(), 303);
    assert!(admin.get(&id).await.unwrap().expire_time.is_none(), "cleared: never expires");
    // Not a time, or in the past: said at the field.
    for bad in ["tomorrow", "2001-01-01T00:00"] {
        let form = [("display_name", "Bad expiry"), ("expire_time", bad), ("csrf", token.as_str())];
        let response = browser.post("/keys", &form).await;
        assert_eq!(response.status(), 422, "{bad}");
        let page = response.text().await.unwrap();
        assert!(page.contains(r#"id="expire_time-error""#), "{bad}: {page}");
    }
}

#[tokio::test]
async fn every_change_needs_this_origin_and_the_session_token() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let id = admin.create("Target", &[]).await.unwrap().api_key.unwrap().id;
    let (mut browser, token) = signed_in(&app).await;
    let paths: Vec<String> = ["edit", "regenerate", "delete", "disable", "enable", "unlock", "undelete"]
        .iter()
        .map(|action| format!("/keys/{id}/{action}"))
        .chain(["/keys".to_owned()])
        .collect();
    let form = [("csrf", token.as_str()), ("display_name", "Changed"), ("etag", "")];
    let no_token = [("display_name", "Changed"), ("etag", "")];
    for path in &paths {
        for (case, form, headers) in [
            ("another origin", &form[..], &[("origin", "https://evil.example")][..]),
            ("an opaque origin", &form[..], &[("origin", "null")][..]),
            ("cross-site", &form[..], &[("sec-fetch-site", "cross-site")][..]),
            ("no CSRF token", &no_token[..], &[][..]),
        ] {
            let response = browser.post_with(path, form, headers).await;
            assert_eq!(response.status(), 403, "{path}: {case}");
        }
    }
    // Nothing happened to the key, and the session still works.
    let key = admin.get(&id).await.unwrap();
    assert_eq!((key.display_name.as_str(), key.state()), ("Target", pb::api_key::State::Active));
    assert_eq!(browser.get("/keys").await.status(), 200);
    // Signing out from another site does nothing either.
    assert_eq!(
        browser.post_with("/logout", &[("csrf", &token)], &[("origin", "https://evil.example")]).await.status(),
        403
    );
    assert_eq!(browser.get("/keys").await.status(), 200);

    // A name that points at the loopback console from elsewhere (DNS rebinding) is not served.
    let response =
        browser.http.get(format!("{}/login", browser.base)).header("host", "evil.example").send().await.unwrap();
    assert_eq!(response.status(), 421);
}

#[tokio::test]
async fn a_locked_key_is_unlocked_and_a_restricted_admin_is_held_to_its_networks() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    crate::lockout::set_threshold(&admin, 1).await;
    let created = admin.create("Will lock", &[]).await.unwrap();
    let id = created.api_key.unwrap().id;
    let mut client = app.client().await;
    authenticate_token(&mut client, &crate::lockout::wrong(&created.token), &[]).await.unwrap_err();
    crate::lockout::until_state(&admin, &id, pb::api_key::State::Locked).await;

    let (mut browser, token) = signed_in(&app).await;
    let page = browser.get("/keys").await.text().await.unwrap();
    assert!(page.contains(&format!(r#"action="/keys/{id}/unlock""#)), "a locked key offers Unlock");
    assert_eq!(browser.post(&format!("/keys/{id}/unlock"), &[("csrf", &token)]).await.status(), 303);
    assert_eq!(admin.get(&id).await.unwrap().state(), pb::api_key::State::Active);
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();

    // An administrator key that may be used only from 10.0.0.0/8 cannot sign in from here.
    let request = pb::CreateApiKeyRequest {
        display_name: "Office admin".into(),
        permissions: vec!["api_keys_admin".into()],
        allowed_cidrs: vec!["10.0.0.0/8".into()],
        ..Default::default()
    };
    let office = admin.create_full(request).await.unwrap().token;
    let mut browser = Browser::new(format!("http://{}", app.console_addr.unwrap()), None);
    let response = browser.post("/login", &[("token", &office)]).await;
    assert_eq!(response.status(), 403);
    assert!(browser.cookie.is_none());
}

#[tokio::test]
async fn the_console_is_served_over_tls_with_a_secure_host_cookie() {
    let pki = crate::tls::Pki::new();
    let app = TestApp::spawn_with(|config| pki.serve(config, false)).await;
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let mut browser = Browser::new(format!("https://localhost:{}", app.console_addr.unwrap().port()), Some(&ca));
    // Over HTTP/2, as browsers speak it (`:authority`, no Host header).
    let response = browser.post("/login", &[("token", &app.admin_token)]).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 303);
    assert!(header(&response, "strict-transport-security").starts_with("max-age="));
    let cookie = header(&response, "set-cookie").to_owned();
    assert!(cookie.starts_with("__Host-apikeys_session=") && cookie.contains("; Secure"), "{cookie}");
    let page = browser.get("/keys").await.text().await.unwrap();
    let created = browser.post("/keys", &[("display_name", "Over TLS"), ("csrf", &csrf(&page))]).await;
    assert_eq!(created.status(), 200, "a form post over HTTP/2 passes the origin check");
    assert!(created.text().await.unwrap().contains("cred-token"));
    // Plain HTTP is not served there.
    let plain =
        reqwest::Client::new().get(format!("http://127.0.0.1:{}/login", app.console_addr.unwrap().port())).send().await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

/// The Chromium binary, if Debian's package is installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists())
}

#[tokio::test]
async fn the_whole_console_flow_works_in_chromium() {
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let required = std::env::var_os("APIKEYS_REQUIRE_BROWSER").is_some();
    let Some(chromium) = chromium() else {
        assert!(!required, "APIKEYS_REQUIRE_BROWSER is set but Chromium is not installed");
        eprintln!("skipped: Debian's chromium is not installed (.ci/run installs it)");
        return;
    };
    if !browser_dir.join("node_modules/playwright-core").exists() {
        let installed = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser_dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed || !required, "npm ci in tests/browser failed");
        if !installed {
            eprintln!("skipped: playwright-core could not be installed");
            return;
        }
    }
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = admin.create("Not an admin", &["read_data"]).await.unwrap().token;
    let app_key = admin.create_for_app("Statuspage integration", &[], "statuspage").await.unwrap().api_key.unwrap().id;
    let screenshots = std::env::var("APIKEYS_SCREENSHOTS").unwrap_or_else(|_| app.db.dir.path().display().to_string());
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("console.e2e.mjs"))
        .env("CONSOLE_URL", format!("http://{}", app.console_addr.unwrap()))
        .env("ADMIN_TOKEN", &app.admin_token)
        .env("USER_TOKEN", &user)
        .env("APP_KEY_ID", &app_key)
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser flow failed:\n{stderr}");
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = |name: &str| shown[name]["token"].as_str().unwrap().to_owned();

    // What the console showed is real: the kept key's token works, the regenerated secret
    // replaced the first one, and the deleted keys are deleted.
    let mut client = app.client().await;
    authenticate_token(&mut client, &token("reader"), &["read_data"]).await.unwrap();
    authenticate_token(&mut client, &token("regenerated"), &["read_data"]).await.unwrap();
    let refused = authenticate_token(&mut client, &token("deploy"), &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "the old secret stopped working");
    let scratch = admin.get(shown["scratch"]["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(scratch.state(), pb::api_key::State::Deleted);
    assert_eq!(admin.get(&app_key).await.unwrap().state(), pb::api_key::State::Active, "deleted, then undeleted");
    let deploy = admin.get(shown["deploy"]["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(deploy.description, "Ships releases nightly", "the stale edit was refused");
    for name in ["create", "credentials", "list"] {
        assert!(std::path::Path::new(&screenshots).join(format!("{name}.png")).exists(), "screenshot {name}");
    }
}

#[tokio::test]
async fn guessing_at_the_sign_in_page_spends_the_address_failure_budget() {
    // One failure a second, two at once.
    let app = TestApp::spawn_with(|config| config.auth_failures_per_peer = 1).await;
    let wrong = crate::lockout::wrong(&app.admin_token);
    let mut browser = Browser::new(format!("http://{}", app.console_addr.unwrap()), None);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(browser.post("/login", &[("token", &wrong)]).await.status().as_u16());
    }
    assert_eq!(&answers[..2], [401, 401], "{answers:?}");
    assert!(answers[2..].contains(&429), "the address spent its budget, as on the gRPC port: {answers:?}");
    assert!(browser.cookie.is_none());
}
