//! The admin web console: the API Keys pages of Administrator Settings, served by `apikeys serve`
//! on `console_listen` (HTTPS under `tls_cert`).
//!
//! Every action goes through apikeys' own gRPC stack in process (auth layer, handlers, audit), as
//! the signed-in person or key, from the browser's address: the console can do nothing its user
//! could not do with grpcurl, and its errors are the API's (field violations are shown next to
//! their field).
//!
//! Who is signed in:
//! - a platform JWT an auth proxy forwards (`authorization: Bearer <jwt>` on every request), or
//! - an admin API key token typed into the sign-in page (for bootstrap), kept in memory on the
//!   server for the session, never in the browser.
//!
//! Either way the session is a random 256-bit ID in an HttpOnly, SameSite=Strict cookie (`Secure`
//! and `__Host-` under TLS), ended after `console_idle_timeout_secs` idle or 12 hours. Every state
//! change is a POST carrying the session's CSRF token (compared in constant time) and, when the
//! browser sends them, an `Origin` of this console and `Sec-Fetch-Site: same-origin`. Pages are
//! `Cache-Control: no-store` (credentials shown once never reach a cache), framed by nobody, and
//! under a Content-Security-Policy that allows only this origin's stylesheet and script (no inline
//! script at all); both are embedded in the binary.

mod pages;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;
use tonic::{Code, Status};
use zeroize::Zeroizing;

use crate::{
    auth::{
        Authenticator as _, Principal,
        credential::{Presented, bearer_jwt},
        local::LocalAuthenticator,
    },
    domain::ADMIN_PERMISSION,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
};

pub use pages::Field;

/// The in-process gRPC stack the console calls.
pub type Stack = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// Longest a session lasts, however busy.
const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;
/// Largest form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Keys per page of the list.
const PAGE_SIZE: i32 = 25;
/// How long one console call to the API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed-in browser.
struct Session {
    /// The `authorization` value of a key signed in on the sign-in page; `None` when an auth
    /// proxy sends a JWT with each request.
    authorization: Option<Zeroizing<String>>,
    /// Whose session it is (`key:<id>` or `user:<id>`): a proxy's JWT of another person never
    /// uses it.
    owner: String,
    csrf: String,
    created: Instant,
    seen: Instant,
}

impl Session {
    /// Whether it is still usable at `now`: used within `idle`, and not older than
    /// [`MAX_SESSION_AGE`].
    fn live(&self, now: Instant, idle: Duration) -> bool {
        now.duration_since(self.seen) < idle && now.duration_since(self.created) < MAX_SESSION_AGE
    }
}

/// Whether `sent` is the session's CSRF token `expected` (in constant time).
fn csrf_matches(expected: &str, sent: &str) -> bool {
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The console's state; see the module docs.
pub struct Console {
    api: ApiKeyServiceClient<Stack>,
    authenticator: Arc<LocalAuthenticator>,
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    tls: bool,
    loopback: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// The console's routes over `stack` (apikeys' gRPC services behind their auth layer), signing in
/// with `authenticator`; sessions end after `idle`; `tls` says whether it is served over HTTPS,
/// `loopback` whether it listens on a loopback address only.
pub fn router(
    stack: Stack,
    authenticator: Arc<LocalAuthenticator>,
    idle: Duration,
    tls: bool,
    loopback: bool,
) -> Router {
    let console = Arc::new(Console {
        api: ApiKeyServiceClient::new(stack),
        authenticator,
        sessions: Mutex::default(),
        idle,
        tls,
        loopback,
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/keys") }))
        .route("/console.css", get(|| async { asset("text/css; charset=utf-8", pages::CSS) }))
        .route("/console.js", get(|| async { asset("text/javascript; charset=utf-8", pages::JS) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/keys", get(list).post(create))
        .route("/keys/new", get(new_key))
        .route("/keys/{id}/{page}", get(key_page).post(key_action))
        .fallback(|| async { not_found() })
        .layer(axum::middleware::from_fn_with_state(console.clone(), host_header))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response_with_state(console.clone(), secure_headers))
        .with_state(console)
}

/// Most console connections open at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (slow clients are cut off).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener`, over TLS with `tls` if given (handshakes cut off after
/// `handshake_timeout`), until the task is dropped, which closes every connection. At most
/// [`MAX_CONNECTIONS`] at once, headers within [`HEADER_TIMEOUT`].
///
/// # Errors
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake_timeout: Duration,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Owned here: dropping this task drops the set, which aborts every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = slots.clone().acquire_owned().await.map_err(std::io::Error::other)?;
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            builder.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(64);
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
                }
                None => {
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

/// Gives an HTTP/2 request (`:authority`, no `Host`) its `Host` header, so the origin check
/// reads one thing; and on a loopback listener, refuses any host but a loopback one (421), so a
/// site whose name a DNS rebinding points at 127.0.0.1 cannot reach the console.
async fn host_header(
    State(console): State<Arc<Console>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !request.headers().contains_key(header::HOST)
        && let Some(value) = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    if console.loopback {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        if !matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
            return StatusCode::MISDIRECTED_REQUEST.into_response();
        }
    }
    next.run(request).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The headers every response carries (see the module docs).
async fn secure_headers(State(console): State<Arc<Console>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if console.tls {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
               form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not no-referrer: under it browsers send `Origin: null` with form posts, which the origin
    // check must refuse. same-origin tells other sites nothing.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

fn page_response(status: StatusCode, html: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// Whoever is signed in, for one request.
struct Visitor {
    /// The `authorization` value the API is called with.
    authorization: Zeroizing<String>,
    principal: Principal,
    csrf: String,
    /// The browser's address.
    address: IpAddr,
    /// A cookie to set (a session made for an auth proxy's user).
    set_cookie: Option<String>,
    /// Signed in by an auth proxy (signing out is the platform's business).
    proxied: bool,
}

/// Whose a session is.
fn owner_of(principal: &Principal) -> String {
    if principal.is_person() { format!("user:{}", principal.user_id) } else { format!("key:{}", principal.key_id) }
}

fn random_token() -> Result<String, Halt> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| internal())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn internal() -> Halt {
    Halt::from(page_response(StatusCode::INTERNAL_SERVER_ERROR, pages::message("Something went wrong", "Try again.")))
}

/// A request ended early, with the response it gets (boxed: a response is large, and most
/// requests do not end this way).
struct Halt(Box<Response>);

impl From<Response> for Halt {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Halt {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl Console {
    fn cookie_name(&self) -> &'static str {
        if self.tls { "__Host-apikeys_session" } else { "apikeys_session" }
    }

    fn session_cookie(&self, id: &str) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}", self.cookie_name())
    }

    fn cleared_cookie(&self) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}", self.cookie_name())
    }

    fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    }

    /// Starts a session of `owner`; returns its ID and CSRF token.
    fn start_session(&self, authorization: Option<Zeroizing<String>>, owner: String) -> Result<(String, String), Halt> {
        let (id, csrf) = (random_token()?, random_token()?);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().map_err(|_| internal())?;
        sessions.retain(|_, s| s.live(now, self.idle));
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.seen).map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Session { authorization, owner, csrf: csrf.clone(), created: now, seen: now });
        Ok((id, csrf))
    }

    /// The live session `id` (touched), as its stored authorization, owner and CSRF token.
    fn session(&self, id: &str) -> Option<(Option<Zeroizing<String>>, String, String)> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().ok()?;
        if !sessions.get(id).is_some_and(|s| s.live(now, self.idle)) {
            sessions.remove(id);
            return None;
        }
        let session = sessions.get_mut(id)?;
        session.seen = now;
        Some((session.authorization.clone(), session.owner.clone(), session.csrf.clone()))
    }

    /// The administrator `authorization` (a key credential or a JWT) is, checked as apikeys'
    /// auth layer checks an admin call: verified, a key's networks against the browser's
    /// `address`, and the administration permission (`MissingPermissions` without it).
    async fn administrator(&self, authorization: &str, address: IpAddr) -> Result<Principal, crate::Error> {
        let principal = match Presented::parse(authorization.as_bytes()) {
            Some(Presented::Key(credential)) => self.authenticator.authenticate_from(credential, Some(address)).await?,
            Some(Presented::Jwt(token)) => self.authenticator.authenticate_bearer(&token).await?,
            None => return Err(crate::Error::Unauthenticated),
        };
        crate::auth::admit(principal, &[ADMIN_PERMISSION], Some(address), None)
    }

    /// Who is signed in: the auth proxy's JWT, else the session's key. Not signed in: a redirect
    /// to the sign-in page. Signed in without the administration permission: a refusal page.
    async fn visitor(&self, headers: &HeaderMap, address: IpAddr) -> Result<Visitor, Halt> {
        let proxied = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_jwt(value.as_bytes()).map(|_| value))
            .and_then(|value| value.to_str().ok())
            .map(|value| Zeroizing::new(value.to_owned()));
        let from_proxy = proxied.is_some();
        let session = self.session_id(headers).and_then(|id| Some((self.session(&id)?, id)));
        // A key's session holds its credential; a proxy's user brings theirs with each request
        // (their session, if any, holds none, so it is useless without the JWT).
        let (authorization, session) = match (proxied, session) {
            (Some(jwt), session) => (jwt, session.filter(|((stored, _, _), _)| stored.is_none())),
            (None, Some(((Some(key), owner, csrf), id))) => (key, Some(((None, owner, csrf), id))),
            _ => return Err(Redirect::to("/login").into_response().into()),
        };
        let principal = match self.administrator(&authorization, address).await {
            Ok(principal) => principal,
            Err(error) if error.code() == Code::Unauthenticated => {
                if let Some((_, id)) = &session {
                    self.end_session(id);
                }
                return Err(Redirect::to("/login").into_response().into());
            }
            Err(crate::Error::MissingPermissions(_)) => {
                let page = pages::message(
                    "Not an administrator",
                    "You are signed in, but you do not hold the API Keys administration permission.",
                );
                return Err(page_response(StatusCode::FORBIDDEN, page).into());
            }
            Err(error) => return Err(api_error_page(&Status::from(error)).into()),
        };
        let owner = owner_of(&principal);
        // Only now, for an administrator, is a session made: for a proxy's user whose session is
        // missing, expired or someone else's.
        let (csrf, set_cookie) = match session {
            Some(((_, session_owner, csrf), _)) if session_owner == owner => (csrf, None),
            _ => {
                let (id, csrf) = self.start_session(None, owner)?;
                (csrf, Some(self.session_cookie(&id)))
            }
        };
        Ok(Visitor { authorization, principal, csrf, address, set_cookie, proxied: from_proxy })
    }

    fn end_session(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
    }

    /// A request to the API as `visitor`.
    fn request<T>(&self, visitor: &Visitor, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        if let Ok(mut value) = visitor.authorization.parse::<tonic::metadata::MetadataValue<_>>() {
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
        request.metadata_mut().insert("user-agent", tonic::metadata::MetadataValue::from_static("apikeys-console"));
        let peer = SocketAddr::new(visitor.address, 0);
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: Some(peer) });
        request
    }

    /// The catalog, for the permission checkboxes.
    async fn catalog(&self, visitor: &Visitor) -> Result<Vec<pb::Permission>, Status> {
        let request = self.request(visitor, pb::ListPermissionsRequest {});
        Ok(self.api.clone().list_permissions(request).await?.into_inner().permissions)
    }

    async fn get_key(&self, visitor: &Visitor, id: &str) -> Result<pb::ApiKey, Status> {
        let request = self.request(visitor, pb::GetApiKeyRequest { id: id.to_owned() });
        self.api.clone().get_api_key(request).await?.into_inner().api_key.ok_or_else(|| Status::not_found(id))
    }
}

/// A form body or query string: every pair, in order (repeated names are repeated pairs).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(key, _)| key == name).map(|(_, value)| value.clone()).collect()
    }
}

/// Refuses a state change that does not come from this console's own page: a foreign `Origin`
/// or `Sec-Fetch-Site`, or a CSRF token that is not the session's.
fn check_origin(headers: &HeaderMap) -> Result<(), Halt> {
    let forbidden = || {
        page_response(
            StatusCode::FORBIDDEN,
            pages::message(
                "Refused",
                "This request did not come from this console's own page. Reload it and try again.",
            ),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(forbidden().into());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let matches = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) == Some(host);
        if !matches {
            return Err(forbidden().into());
        }
    }
    Ok(())
}

fn check_csrf(visitor: &Visitor, form: &Form) -> Result<(), Halt> {
    if csrf_matches(&visitor.csrf, form.get("csrf")) {
        Ok(())
    } else {
        Err(Halt::from(page_response(
            StatusCode::FORBIDDEN,
            pages::message(
                "Refused",
                "This form has expired or did not come from this console. Reload the page and try again.",
            ),
        )))
    }
}

/// A page for an API error that is not about a form field.
fn api_error_page(status: &Status) -> Response {
    let (code, title) = match status.code() {
        Code::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "Not allowed"),
        Code::Unavailable | Code::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        _ => (StatusCode::BAD_REQUEST, "Could not do that"),
    };
    page_response(code, pages::message(title, status.message()))
}

/// The field errors of `status`, keyed by form field (`display_name`, `permissions`, ...); a
/// status without field violations becomes one error for `fallback`.
fn field_errors(status: &Status, fallback: &str) -> Vec<(String, String)> {
    use tonic_types::StatusExt as _;
    let mut errors: Vec<(String, String)> = status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| {
                    let field = v.field.rsplit('.').next().unwrap_or_default();
                    let field = field.split('[').next().unwrap_or_default().to_owned();
                    (field, v.description)
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        let field = if status.code() == Code::AlreadyExists { "display_name" } else { fallback };
        errors.push((field.to_owned(), status.message().to_owned()));
    }
    errors
}

fn with_cookie(mut response: Response, cookie: Option<&str>) -> Response {
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

macro_rules! visitor {
    ($console:expr, $headers:expr, $addr:expr) => {
        match $console.visitor(&$headers, $addr.ip().to_canonical()).await {
            Ok(visitor) => visitor,
            Err(halt) => return halt.into_response(),
        }
    };
}

async fn login_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if console.session_id(&headers).and_then(|id| console.session(&id)).is_some() {
        return Redirect::to("/keys").into_response();
    }
    page_response(StatusCode::OK, pages::login(None))
}

async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = check_origin(&headers) {
        return response.into_response();
    }
    if body.len() > MAX_FORM_BYTES {
        return page_response(StatusCode::PAYLOAD_TOO_LARGE, pages::login(Some("That is too long to be a token.")));
    }
    let form = Form::parse(&body);
    let token = Zeroizing::new(form.get("token").trim().to_owned());
    let authorization = Zeroizing::new(format!("Bearer {}", token.as_str()));
    match console.administrator(&authorization, addr.ip().to_canonical()).await {
        Ok(principal) => {
            let id = match console.start_session(Some(authorization), owner_of(&principal)) {
                Ok((id, _)) => id,
                Err(halt) => return halt.into_response(),
            };
            tracing::info!(key_id = %principal.key_id, user_id = %principal.user_id, "console sign-in");
            let cookie = console.session_cookie(&id);
            with_cookie(Redirect::to("/keys").into_response(), Some(&cookie))
        }
        Err(crate::Error::MissingPermissions(_)) => page_response(
            StatusCode::FORBIDDEN,
            pages::login(Some("This key does not hold the API Keys administration permission.")),
        ),
        Err(error) if error.code() == Code::Unauthenticated => {
            page_response(StatusCode::UNAUTHORIZED, pages::login(Some("That token is not valid.")))
        }
        Err(error) if error.code() == Code::PermissionDenied => {
            page_response(StatusCode::FORBIDDEN, pages::login(Some(&error.to_string())))
        }
        Err(error) if error.code() == Code::ResourceExhausted => {
            page_response(StatusCode::TOO_MANY_REQUESTS, pages::login(Some(&error.to_string())))
        }
        Err(error) => page_response(StatusCode::SERVICE_UNAVAILABLE, pages::login(Some(&error.to_string()))),
    }
}

async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = check_origin(&headers) {
        return response.into_response();
    }
    let form = Form::parse(&body);
    if let Some(id) = console.session_id(&headers)
        && let Some((_, _, csrf)) = console.session(&id)
        && csrf_matches(&csrf, form.get("csrf"))
    {
        console.end_session(&id);
    }
    let cleared = console.cleared_cookie();
    with_cookie(Redirect::to("/login").into_response(), Some(&cleared))
}

async fn list(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let visitor = visitor!(console, headers, addr);
    let query = Form::parse(query.unwrap_or_default().as_bytes());
    let catalog = match console.catalog(&visitor).await {
        Ok(catalog) => catalog,
        Err(status) => return api_error_page(&status),
    };
    let filter = pages::ListFilter {
        name: query.get("name").to_owned(),
        permission: query.get("permission").to_owned(),
        page_token: query.get("page_token").to_owned(),
        show_deleted: query.get("show_deleted") == "on",
    };
    let request = pb::ListApiKeysRequest {
        page_size: PAGE_SIZE,
        page_token: filter.page_token.clone(),
        name_contains: filter.name.clone(),
        permission: filter.permission.clone(),
        show_deleted: filter.show_deleted,
        ..Default::default()
    };
    let response = console.api.clone().list_api_keys(console.request(&visitor, request)).await;
    let html = match response {
        Ok(response) => {
            let response = response.into_inner();
            pages::list(
                &pages::Chrome::of(&visitor),
                &catalog,
                &filter,
                &response.api_keys,
                &response.next_page_token,
                None,
            )
        }
        Err(status) => pages::list(&pages::Chrome::of(&visitor), &catalog, &filter, &[], "", Some(status.message())),
    };
    with_cookie(page_response(StatusCode::OK, html), visitor.set_cookie.as_deref())
}

async fn new_key(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let visitor = visitor!(console, headers, addr);
    let catalog = match console.catalog(&visitor).await {
        Ok(catalog) => catalog,
        Err(status) => return api_error_page(&status),
    };
    let html = pages::key_form(&pages::Chrome::of(&visitor), &catalog, &pages::KeyForm::default(), &[]);
    with_cookie(page_response(StatusCode::OK, html), visitor.set_cookie.as_deref())
}

/// The key form as submitted.
fn submitted(form: &Form) -> pages::KeyForm {
    pages::KeyForm {
        id: String::new(),
        display_name: form.get("display_name").to_owned(),
        description: form.get("description").to_owned(),
        permissions: form.all("permissions"),
        etag: form.get("etag").to_owned(),
        app_id: String::new(),
        expire_time: form.get("expire_time").trim().to_owned(),
    }
}

/// The expiry of a key form (`YYYY-MM-DDTHH:MM`, UTC, as a `datetime-local` field sends it):
/// `None` for an empty field.
///
/// # Errors
/// A status naming `expire_time` when the text is not such a time.
fn expiry(entered: &pages::KeyForm) -> Result<Option<prost_types::Timestamp>, Status> {
    if entered.expire_time.is_empty() {
        return Ok(None);
    }
    let time = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(&entered.expire_time, format).ok())
        .ok_or_else(|| {
            let details = tonic_types::ErrorDetails::with_bad_request_violation(
                "expire_time",
                "must be a date and time, such as 2027-01-31T12:00 (UTC)",
            );
            <Status as tonic_types::StatusExt>::with_error_details(Code::InvalidArgument, "invalid expiry", details)
        })?;
    Ok(Some(crate::pb::timestamp(time.and_utc())))
}

async fn create(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let visitor = visitor!(console, headers, addr);
    let form = Form::parse(&body);
    if let Err(response) = check_origin(&headers).and_then(|()| check_csrf(&visitor, &form)) {
        return response.into_response();
    }
    let entered = submitted(&form);
    let expire_time = match expiry(&entered) {
        Ok(time) => time,
        Err(status) => return form_error(&console, &visitor, &entered, &status).await,
    };
    let request = pb::CreateApiKeyRequest {
        display_name: entered.display_name.clone(),
        description: entered.description.clone(),
        permissions: entered.permissions.clone(),
        expire_time,
        ..Default::default()
    };
    match console.api.clone().create_api_key(console.request(&visitor, request)).await {
        Ok(created) => {
            let created = created.into_inner();
            let key = created.api_key.unwrap_or_default();
            let html = pages::credentials(
                &pages::Chrome::of(&visitor),
                "API key created",
                &key,
                &created.secret,
                &created.token,
            );
            page_response(StatusCode::OK, html)
        }
        Err(status) => form_error(&console, &visitor, &entered, &status).await,
    }
}

/// The key form again, with `status`'s errors next to their fields.
async fn form_error(console: &Console, visitor: &Visitor, entered: &pages::KeyForm, status: &Status) -> Response {
    if matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unauthenticated
    ) {
        return api_error_page(status);
    }
    let catalog = console.catalog(visitor).await.unwrap_or_default();
    let errors = field_errors(status, "form");
    let code =
        if status.code() == Code::AlreadyExists { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
    page_response(code, pages::key_form(&pages::Chrome::of(visitor), &catalog, entered, &errors))
}

async fn edit_page(console: &Console, headers: &HeaderMap, addr: SocketAddr, id: String) -> Response {
    let visitor = visitor!(console, headers, addr);
    let (key, catalog) = match tokio::try_join!(console.get_key(&visitor, &id), console.catalog(&visitor)) {
        Ok(found) => found,
        Err(status) => return api_error_page(&status),
    };
    let form = pages::KeyForm {
        id: key.id.clone(),
        display_name: key.display_name.clone(),
        description: key.description.clone(),
        permissions: key.permissions.clone(),
        etag: key.etag.clone(),
        app_id: key.app_id.clone(),
        expire_time: key
            .expire_time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default(),
    };
    with_cookie(
        page_response(StatusCode::OK, pages::key_form(&pages::Chrome::of(&visitor), &catalog, &form, &[])),
        visitor.set_cookie.as_deref(),
    )
}

async fn edit(console: &Console, headers: &HeaderMap, addr: SocketAddr, id: String, body: &[u8]) -> Response {
    let visitor = visitor!(console, headers, addr);
    let form = Form::parse(body);
    if let Err(response) = check_origin(headers).and_then(|()| check_csrf(&visitor, &form)) {
        return response.into_response();
    }
    let mut entered = submitted(&form);
    entered.id.clone_from(&id);
    entered.app_id = form.get("app_id").to_owned();
    let expire_time = match expiry(&entered) {
        Ok(time) => time,
        Err(status) => return form_error(console, &visitor, &entered, &status).await,
    };
    let request = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: id.clone(),
            display_name: entered.display_name.clone(),
            description: entered.description.clone(),
            permissions: entered.permissions.clone(),
            expire_time,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: ["display_name", "description", "permissions", "expire_time"].map(String::from).to_vec(),
        }),
        etag: entered.etag.clone(),
        acknowledge_app_impact: form.get("acknowledge_app_impact") == "on",
    };
    match console.api.clone().update_api_key(console.request(&visitor, request)).await {
        Ok(_) => Redirect::to("/keys").into_response(),
        Err(status) if status.code() == Code::Aborted => {
            let status = Status::aborted(
                "Someone changed this key since you opened it. Reload the page to see their change, then edit again.",
            );
            form_error(console, &visitor, &entered, &status).await
        }
        Err(status) => form_error(console, &visitor, &entered, &status).await,
    }
}

/// Which of the confirmed actions a page is for.
#[derive(Clone, Copy)]
pub enum Action {
    /// Regenerate API Key Secret.
    Regenerate,
    /// Delete API Key.
    Delete,
    /// Disable API Key.
    Disable,
}

async fn confirm_page(console: &Console, headers: &HeaderMap, addr: SocketAddr, id: &str, action: Action) -> Response {
    let visitor = visitor!(console, headers, addr);
    match console.get_key(&visitor, id).await {
        Ok(key) => with_cookie(
            page_response(StatusCode::OK, pages::confirm(&pages::Chrome::of(&visitor), &key, action, None)),
            visitor.set_cookie.as_deref(),
        ),
        Err(status) => api_error_page(&status),
    }
}

/// A confirmed action's form: its etag and, for an app's key, the acknowledgement.
async fn confirmed(
    console: &Console,
    visitor: &Visitor,
    headers: &HeaderMap,
    body: &[u8],
    id: &str,
    action: Action,
) -> Result<(String, bool), Halt> {
    let form = Form::parse(body);
    check_origin(headers).and_then(|()| check_csrf(visitor, &form))?;
    let acknowledged = form.get("acknowledge_app_impact") == "on";
    let key = console.get_key(visitor, id).await.map_err(|status| api_error_page(&status))?;
    if !key.app_id.is_empty() && !acknowledged {
        let html = pages::confirm(
            &pages::Chrome::of(visitor),
            &key,
            action,
            Some("Confirm that you understand the app may stop working."),
        );
        return Err(page_response(StatusCode::UNPROCESSABLE_ENTITY, html).into());
    }
    Ok((form.get("etag").to_owned(), acknowledged))
}

async fn regenerate(console: &Console, headers: &HeaderMap, addr: SocketAddr, id: String, body: &[u8]) -> Response {
    let visitor = visitor!(console, headers, addr);
    let (etag, acknowledge_app_impact) =
        match confirmed(console, &visitor, headers, body, &id, Action::Regenerate).await {
            Ok(confirmed) => confirmed,
            Err(halt) => return halt.into_response(),
        };
    let request = pb::RegenerateApiKeySecretRequest { id, etag, acknowledge_app_impact, previous_secret_ttl: None };
    match console.api.clone().regenerate_api_key_secret(console.request(&visitor, request)).await {
        Ok(done) => {
            let done = done.into_inner();
            let key = done.api_key.unwrap_or_default();
            let html = pages::credentials(
                &pages::Chrome::of(&visitor),
                "API key secret regenerated",
                &key,
                &done.secret,
                &done.token,
            );
            page_response(StatusCode::OK, html)
        }
        Err(status) => api_error_page(&status),
    }
}

/// Delete or Disable, confirmed: the key stops working (for an app's key, acknowledged).
async fn retire(
    console: &Console,
    headers: &HeaderMap,
    addr: SocketAddr,
    id: String,
    body: &[u8],
    action: Action,
) -> Response {
    let visitor = visitor!(console, headers, addr);
    let (etag, acknowledge_app_impact) = match confirmed(console, &visitor, headers, body, &id, action).await {
        Ok(confirmed) => confirmed,
        Err(halt) => return halt.into_response(),
    };
    let mut api = console.api.clone();
    let result = match action {
        Action::Delete => {
            let request = pb::DeleteApiKeyRequest { id, etag, acknowledge_app_impact };
            api.delete_api_key(console.request(&visitor, request)).await.map(drop)
        }
        Action::Disable => {
            let request = pb::DisableApiKeyRequest { id, etag, acknowledge_app_impact };
            api.disable_api_key(console.request(&visitor, request)).await.map(drop)
        }
        Action::Regenerate => return not_found(),
    };
    match result {
        Ok(()) => Redirect::to("/keys").into_response(),
        Err(status) => api_error_page(&status),
    }
}

/// The restoring actions, one button each in the list: no confirmation, nothing can break.
#[derive(Clone, Copy)]
enum Restore {
    Enable,
    Unlock,
    Undelete,
}

async fn restore(
    console: &Console,
    headers: &HeaderMap,
    addr: SocketAddr,
    id: String,
    body: &[u8],
    action: Restore,
) -> Response {
    let visitor = visitor!(console, headers, addr);
    let form = Form::parse(body);
    if let Err(response) = check_origin(headers).and_then(|()| check_csrf(&visitor, &form)) {
        return response.into_response();
    }
    let etag = form.get("etag").to_owned();
    let mut api = console.api.clone();
    let result = match action {
        Restore::Enable => {
            api.enable_api_key(console.request(&visitor, pb::EnableApiKeyRequest { id, etag })).await.map(drop)
        }
        Restore::Unlock => {
            api.unlock_api_key(console.request(&visitor, pb::UnlockApiKeyRequest { id, etag })).await.map(drop)
        }
        Restore::Undelete => {
            api.undelete_api_key(console.request(&visitor, pb::UndeleteApiKeyRequest { id, etag })).await.map(drop)
        }
    };
    match result {
        Ok(()) => Redirect::to("/keys").into_response(),
        Err(status) => api_error_page(&status),
    }
}

async fn usage(console: &Console, headers: &HeaderMap, addr: SocketAddr, id: String) -> Response {
    let visitor = visitor!(console, headers, addr);
    let request = console.request(&visitor, pb::GetApiKeyUsageRequest { id: id.clone(), window: None });
    let found = tokio::try_join!(console.get_key(&visitor, &id), async {
        console.api.clone().get_api_key_usage(request).await.map(tonic::Response::into_inner)
    });
    match found {
        Ok((key, usage)) => with_cookie(
            page_response(StatusCode::OK, pages::usage_page(&pages::Chrome::of(&visitor), &key, &usage)),
            visitor.set_cookie.as_deref(),
        ),
        Err(status) => api_error_page(&status),
    }
}

/// The pages of one key: GET `/keys/{id}/{page}`.
async fn key_page(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, page)): Path<(String, String)>,
) -> Response {
    match page.as_str() {
        "edit" => edit_page(&console, &headers, addr, id).await,
        "regenerate" => confirm_page(&console, &headers, addr, &id, Action::Regenerate).await,
        "delete" => confirm_page(&console, &headers, addr, &id, Action::Delete).await,
        "disable" => confirm_page(&console, &headers, addr, &id, Action::Disable).await,
        "usage" => usage(&console, &headers, addr, id).await,
        _ => not_found(),
    }
}

/// The changes of one key: POST `/keys/{id}/{action}`.
async fn key_action(
    State(console): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (console, headers) = (&console, &headers);
    match action.as_str() {
        "edit" => edit(console, headers, addr, id, &body).await,
        "regenerate" => regenerate(console, headers, addr, id, &body).await,
        "delete" => retire(console, headers, addr, id, &body, Action::Delete).await,
        "disable" => retire(console, headers, addr, id, &body, Action::Disable).await,
        "enable" => restore(console, headers, addr, id, &body, Restore::Enable).await,
        "unlock" => restore(console, headers, addr, id, &body, Restore::Unlock).await,
        "undelete" => restore(console, headers, addr, id, &body, Restore::Undelete).await,
        _ => not_found(),
    }
}

fn not_found() -> Response {
    page_response(StatusCode::NOT_FOUND, pages::message("Not found", "There is no such page."))
}
