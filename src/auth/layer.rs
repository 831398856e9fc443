//! The auth tower layer: reads the credential from the `authorization` header (gRPC metadata or HTTP
//! header, the same thing on the wire), verifies it with an [`Authenticator`], admits the request
//! ([`super::admit`]: the key's networks against the client address, the permissions the
//! [`AccessPolicy`] requires for the path, the key's rate limit), and hands the [`Principal`] to the
//! handler in the request extensions.
//!
//! Rejections are proper answers for the protocol in use: a gRPC status (UNAUTHENTICATED,
//! PERMISSION_DENIED naming what is missing, UNAVAILABLE, RESOURCE_EXHAUSTED) for gRPC requests, and
//! 401 with `WWW-Authenticate` / 403 / 503 / 429 for plain HTTP. Paths the policy does not list are
//! refused (fail closed), so a new method cannot ship unprotected by accident.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::{Code, Status};

use super::{
    Authenticator, Principal, admit, authorize,
    credential::Presented,
    restrictions::{Cidr, ClientAddress, Forwarding, RateLimiter, client_address},
};
use crate::error::Error;

/// What a path needs.
#[derive(Debug, Clone)]
enum Rule {
    /// No credential needed (health, reflection, ...).
    Public,
    /// A valid credential holding all these permissions (possibly none).
    Require(Arc<[String]>),
    /// Not declared in the policy: refused.
    Deny,
}

/// Which paths are public and which permissions each protected path requires.
///
/// Keys are gRPC paths (`/incidents.v1.IncidentService/CreateIncident`) or HTTP routes, optionally
/// prefixed with a method (`POST /incidents`). A key ending in `*` matches every path starting with
/// what precedes it; the longest such prefix wins. Exact keys beat prefixes, and a key with a method
/// beats one without.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    exact: HashMap<String, Rule, foldhash::fast::RandomState>,
    prefixes: Vec<(String, Rule)>,
    unlisted: Rule,
    /// Whether any key names a method: only then is `METHOD path` built for a lookup.
    has_methods: bool,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessPolicy {
    /// An empty policy: everything is refused until declared.
    pub fn new() -> Self {
        Self { exact: HashMap::default(), prefixes: Vec::new(), unlisted: Rule::Deny, has_methods: false }
    }

    fn with(mut self, key: &str, rule: Rule) -> Self {
        self.has_methods |= key.contains(' ');
        match key.strip_suffix('*') {
            Some(prefix) => {
                self.prefixes.push((prefix.to_owned(), rule));
                self.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            }
            None => {
                self.exact.insert(key.to_owned(), rule);
            }
        }
        self
    }

    /// Lets `key` through without credentials.
    pub fn public(self, key: &str) -> Self {
        self.with(key, Rule::Public)
    }

    /// Requires a valid credential holding every permission in `permissions` for `key`.
    pub fn require<I, S>(self, key: &str, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let permissions: Vec<String> = permissions.into_iter().map(Into::into).collect();
        self.with(key, Rule::Require(permissions.into()))
    }

    /// Lets gRPC health checks and server reflection (v1 and v1alpha) through without credentials.
    pub fn public_health_and_reflection(self) -> Self {
        self.public("/grpc.health.v1.Health/*")
            .public("/grpc.reflection.v1.ServerReflection/*")
            .public("/grpc.reflection.v1alpha.ServerReflection/*")
    }

    /// Paths not listed require a valid credential (with no particular permission) instead of being
    /// refused.
    pub fn authenticated_by_default(mut self) -> Self {
        self.unlisted = Rule::Require(Arc::from(Vec::new()));
        self
    }

    fn rule(&self, method: &Method, path: &str) -> &Rule {
        let with_method = self.has_methods.then(|| format!("{method} {path}"));
        let with_method = with_method.as_deref();
        if let Some(rule) = with_method.and_then(|k| self.exact.get(k)).or_else(|| self.exact.get(path)) {
            return rule;
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| {
                with_method.is_some_and(|k| k.starts_with(prefix.as_str())) || path.starts_with(prefix.as_str())
            })
            .map_or(&self.unlisted, |(_, rule)| rule)
    }
}

/// Tower layer that authenticates requests; see the module docs.
///
/// It wraps any `tower::Service<http::Request<B>>` whose response body is `Default`, so the same
/// value works with `tonic::transport::Server::builder().layer(auth)` (every gRPC service, plus plain
/// HTTP routes added with `add_routes` and `accept_http1(true)`) and with `axum::Router::layer(auth)`
/// or any hyper service. Cloning is cheap (one `Arc`).
///
/// Per request: a public path goes straight through; a path not in the policy is refused with
/// PERMISSION_DENIED / 403; otherwise the credential is read, verified and its permissions checked,
/// answering UNAUTHENTICATED / 401 + `WWW-Authenticate`, PERMISSION_DENIED naming the missing
/// permissions / 403 + `insufficient_scope`, UNAVAILABLE / 503 when apikeys cannot be reached, or
/// RESOURCE_EXHAUSTED / 429 when it sheds load. On success the [`Principal`] is in the request
/// extensions (read it with [`principal`] in tonic, or `Extension<Principal>` in axum).
///
/// The client address checked against a key's `allowed_cidrs` is the TCP peer, or with
/// [`AuthLayer::trust_forwarded_for`] the `X-Forwarded-For` entry the outermost trusted proxy
/// added. Rate limits are counted by this layer (all its clones share one count): with N processes
/// serving, a key can make N times its limit.
#[derive(Debug)]
pub struct AuthLayer<A> {
    admission: Arc<Admission<A>>,
}

/// How requests are admitted: the credential verified by `authenticator`, then the policy and
/// the rate limits. One `Arc` of it per service: the stack is cloned for every call.
#[derive(Debug)]
struct Admission<A> {
    authenticator: Arc<A>,
    policy: AccessPolicy,
    limiter: Arc<RateLimiter>,
    forwarding: Forwarding,
}

impl<A> Clone for AuthLayer<A> {
    fn clone(&self) -> Self {
        Self { admission: self.admission.clone() }
    }
}

impl<A: Authenticator> AuthLayer<A> {
    /// A layer verifying credentials with `authenticator` according to `policy`, client addresses
    /// taken from the TCP peer, rate limits counted by a limiter of its own.
    pub fn new(authenticator: Arc<A>, policy: AccessPolicy) -> Self {
        let admission = Admission { authenticator, policy, limiter: Arc::default(), forwarding: Forwarding::default() };
        Self { admission: Arc::new(admission) }
    }

    /// Reads the client address from `X-Forwarded-For`, where each of `proxies` trusted proxies in
    /// front of this service appends the address it saw: the entry `proxies` from the right. With
    /// fewer entries, the address is unknown (keys restricted to networks are refused). Only set this
    /// when every request passes through those proxies, or clients can claim any address.
    #[must_use]
    pub fn trust_forwarded_for(self, proxies: usize) -> Self {
        self.with_admission(|admission| admission.forwarding.hops = proxies)
    }

    /// Reads `X-Forwarded-For` only from requests whose TCP peer is in `networks` (the proxies'
    /// addresses); others come straight from their client, whatever their header says. Without
    /// this, anyone who can reach the service directly can claim any address.
    #[must_use]
    pub fn forwarded_only_from(self, networks: Vec<Cidr>) -> Self {
        self.with_admission(|admission| admission.forwarding.proxies = networks)
    }

    /// Counts rate limits in `limiter`, shared with whatever else admits requests in this process.
    #[must_use]
    pub fn with_rate_limiter(self, limiter: Arc<RateLimiter>) -> Self {
        self.with_admission(|admission| admission.limiter = limiter)
    }

    fn with_admission(self, change: impl FnOnce(&mut Admission<A>)) -> Self {
        let mut admission = Admission {
            authenticator: self.admission.authenticator.clone(),
            policy: self.admission.policy.clone(),
            limiter: self.admission.limiter.clone(),
            forwarding: self.admission.forwarding.clone(),
        };
        change(&mut admission);
        Self { admission: Arc::new(admission) }
    }
}

impl<S, A> tower::Layer<S> for AuthLayer<A> {
    type Service = AuthService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, admission: self.admission.clone() }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Debug)]
pub struct AuthService<S, A> {
    inner: S,
    admission: Arc<Admission<A>>,
}

impl<S: Clone, A> Clone for AuthService<S, A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), admission: self.admission.clone() }
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

pin_project_lite::pin_project! {
    /// The future of [`AuthService`]: a public call's own future (not boxed: Authenticate and
    /// health go through here), or the checks and then the call.
    #[project = AuthFutureProj]
    pub enum AuthFuture<F, T> {
        /// A public call, passed through.
        Public { #[pin] future: F },
        /// A call that needs its credential checked (or is refused).
        Checked { future: BoxFuture<T> },
    }
}

impl<F: std::future::Future> std::future::Future for AuthFuture<F, F::Output> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            AuthFutureProj::Public { future } => future.poll(cx),
            AuthFutureProj::Checked { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, A, ReqBody, ResBody> tower::Service<Request<ReqBody>> for AuthService<S, A>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: Authenticator,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let required = match self.admission.policy.rule(request.method(), request.uri().path()) {
            // A public call (Authenticate, health) goes straight through, without the state of a
            // verification in its future (and without a clone of the inner service: the whole
            // stack is cloned for every call already, and each clone is shared counts to bump).
            Rule::Public => return AuthFuture::Public { future: self.inner.call(request) },
            Rule::Deny => {
                let response = reject(is_grpc(&request), &Error::NotInPolicy);
                return AuthFuture::Checked { future: Box::pin(async move { Ok(response) }) };
            }
            Rule::Require(required) => required.clone(),
        };
        // The clone was not polled ready; keep the ready one for this call (tower's documented idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        let future = Box::pin(async move {
            let grpc = is_grpc(&request);
            let credential = read_credential(&request);
            let client = client_address(&request, &admission.forwarding);
            // The inner service may log its request metadata: keep the credential out of it (and
            // out of HPACK tables if it is forwarded).
            if let Some(value) = request.headers_mut().get_mut(header::AUTHORIZATION) {
                value.set_sensitive(true);
            }
            let authorized = match credential {
                Ok(Presented::Key(credential)) => {
                    authorize(&*admission.authenticator, credential, &required, client, &admission.limiter).await
                }
                // Boxed: a token verification that waits for a key-set refresh is a large future.
                Ok(Presented::Jwt(token)) => {
                    match Box::pin(admission.authenticator.authenticate_bearer(&token)).await {
                        Ok(principal) => admit(principal, &required, client, Some(&admission.limiter)),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            match authorized {
                Ok(principal) => {
                    if principal.is_person() {
                        tracing::Span::current().record("user_id", tracing::field::display(&principal.user_id));
                    } else {
                        tracing::Span::current().record("key_id", tracing::field::display(&principal.key_id));
                    }
                    let agent = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
                    admission.authenticator.admitted(&principal, client, agent.unwrap_or_default(), &required);
                    request.extensions_mut().insert(principal);
                    request.extensions_mut().insert(ClientAddress(client));
                    inner.call(request).await
                }
                Err(error) => Ok(reject(grpc, &error)),
            }
        });
        AuthFuture::Checked { future }
    }
}

fn read_credential<B>(request: &Request<B>) -> Result<Presented, Error> {
    let header = request.headers().get(header::AUTHORIZATION).ok_or(Error::Unauthenticated)?;
    Presented::parse(header.as_bytes()).ok_or(Error::Unauthenticated)
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The rejection for `error`: a gRPC status for gRPC requests, an HTTP status otherwise.
fn reject<B: Default>(grpc: bool, error: &Error) -> Response<B> {
    if grpc {
        return Status::from(error.clone()).into_http();
    }
    let (status, challenge) = match error.code() {
        Code::Unauthenticated => {
            (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="apikeys", Basic realm="apikeys""#.to_owned()))
        }
        Code::PermissionDenied => match error {
            // RFC 6750 section 3.1: the scope the request lacks.
            Error::MissingPermissions(names) => (
                StatusCode::FORBIDDEN,
                Some(format!(r#"Bearer realm="apikeys", error="insufficient_scope", scope="{}""#, names.join(" "))),
            ),
            // Not in the policy: no credential would help.
            _ => (StatusCode::FORBIDDEN, None),
        },
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
        // Whole seconds, rounded up (RFC 9110): a rate limit says when; the rest, in a second.
        let seconds = match error {
            Error::RateLimited(wait) => wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            _ => 1,
        };
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let Ok(value) = HeaderValue::from_str(&crate::error::clip(&error.to_string(), crate::error::MAX_MESSAGE_BYTES)) {
        response.headers_mut().insert("x-apikeys-error", value);
    }
    response
}

/// The principal the layer authenticated, from a tonic request's extensions.
///
/// # Errors
/// UNAUTHENTICATED if the request did not pass through an [`AuthLayer`] requiring credentials
/// (a wiring bug, never a client error; it fails closed).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, Error> {
    request.extensions().get::<Principal>().ok_or(Error::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use axum::{Extension, Router, body::Body, routing::get};
    use tower::{Layer as _, ServiceExt as _};
    use uuid::Uuid;

    use super::*;
    use crate::auth::{Credential, Secret};

    /// Knows one credential (permissions `read`); `down` plays an unreachable apikeys.
    struct Fixed {
        known: Credential,
        down: Uuid,
    }

    impl Authenticator for Fixed {
        async fn authenticate(&self, credential: Credential) -> crate::Result<Principal> {
            if credential.key_id == self.down {
                return Err(Error::Unavailable("apikeys"));
            }
            if credential != self.known {
                return Err(Error::Unauthenticated);
            }
            Ok(Principal {
                key_id: credential.key_id.to_string(),
                permissions: vec!["read".into()],
                ..Default::default()
            })
        }
    }

    fn credential() -> Credential {
        Credential { key_id: Uuid::new_v4(), secret: Secret::generate().unwrap() }
    }

    async fn who(Extension(principal): Extension<Principal>) -> String {
        principal.key_id
    }

    #[tokio::test]
    async fn the_credential_is_hidden_from_the_inner_services_debug_output() {
        let known = credential();
        let fixed = Fixed { known: known.clone(), down: Uuid::new_v4() };
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let recorder = seen.clone();
        let inner = tower::service_fn(move |request: Request<Body>| {
            // What a consumer logging `tonic::Request::metadata()` would print.
            *recorder.lock().unwrap() =
                format!("{:?}", tonic::metadata::MetadataMap::from_headers(request.headers().clone()));
            async { Ok::<_, std::convert::Infallible>(Response::new(Body::empty())) }
        });
        let service =
            AuthLayer::new(Arc::new(fixed), AccessPolicy::new().require("/svc.v1.Svc/Read", ["read"])).layer(inner);
        for authorization in [known.bearer(), known.basic()] {
            let request = Request::post("/svc.v1.Svc/Read")
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::AUTHORIZATION, &authorization)
                .body(Body::empty())
                .unwrap();
            service.clone().oneshot(request).await.unwrap();
            let debug = seen.lock().unwrap().clone();
            assert!(debug.contains("authorization"), "the header is still there: {debug}");
            let secret_part = authorization.split_once(' ').unwrap().1;
            assert!(!debug.contains(secret_part), "credential in Debug output: {debug}");
        }
    }

    #[tokio::test]
    async fn works_as_an_axum_layer_with_http_answers() {
        let known = credential();
        let down = credential();
        let fixed = Fixed { known: known.clone(), down: down.key_id };
        let policy =
            AccessPolicy::new().require("GET /items", ["read"]).require("GET /admin", ["admin"]).public("/healthz");
        let app = Router::new()
            .route("/items", get(who))
            .route("/admin", get(who))
            .route("/healthz", get(|| async { "ok" }))
            .route("/unlisted", get(|| async { "should not be reached" }))
            .layer(AuthLayer::new(Arc::new(fixed), policy));
        let call = |path: &str, authorization: Option<String>| {
            let mut request = Request::get(path);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            app.clone().oneshot(request.body(Body::empty()).unwrap())
        };

        let ok = call("/items", Some(known.basic())).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
        assert_eq!(body, known.key_id.to_string().as_bytes());
        assert_eq!(call("/items", Some(known.bearer())).await.unwrap().status(), StatusCode::OK);

        for authorization in [None, Some(credential().bearer()), Some("Bearer nonsense".to_owned())] {
            let denied = call("/items", authorization).await.unwrap();
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
            assert!(denied.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().contains("Bearer realm="));
        }

        let forbidden = call("/admin", Some(known.bearer())).await.unwrap();
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        let challenge = forbidden.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains(r#"error="insufficient_scope", scope="admin""#), "{challenge}");

        let unavailable = call("/items", Some(down.bearer())).await.unwrap();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.headers().contains_key(header::RETRY_AFTER));

        assert_eq!(call("/healthz", None).await.unwrap().status(), StatusCode::OK);
        let unlisted = call("/unlisted", Some(known.bearer())).await.unwrap();
        assert_eq!(unlisted.status(), StatusCode::FORBIDDEN);
        assert!(!unlisted.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[tokio::test]
    async fn grpc_requests_get_grpc_statuses() {
        let known = credential();
        let fixed = Fixed { known: known.clone(), down: Uuid::new_v4() };
        let policy = AccessPolicy::new().require("/svc.v1.Svc/Write", ["write"]);
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let service = AuthLayer::new(Arc::new(fixed), policy).layer(inner);
        let grpc = |authorization: Option<String>| {
            let mut request = Request::post("/svc.v1.Svc/Write").header(header::CONTENT_TYPE, "application/grpc");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            service.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        let missing = Status::from_header_map(grpc(None).await.unwrap().headers()).unwrap();
        assert_eq!(missing.code(), Code::Unauthenticated);
        let denied = Status::from_header_map(grpc(Some(known.bearer())).await.unwrap().headers()).unwrap();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("write"), "{denied:?}");
    }

    #[test]
    fn rule_precedence() {
        let policy = AccessPolicy::new()
            .public("/grpc.health.v1.Health/*")
            .require("/svc/Create", ["create"])
            .require("GET /incidents", ["read"])
            .require("POST /incidents", ["create"])
            .require("/incidents/*", ["edit"]);
        let get = Method::GET;
        assert!(matches!(policy.rule(&Method::POST, "/grpc.health.v1.Health/Check"), Rule::Public));
        assert!(matches!(policy.rule(&Method::POST, "/svc/Create"), Rule::Require(p) if p[0] == "create"));
        assert!(matches!(policy.rule(&get, "/incidents"), Rule::Require(p) if p[0] == "read"));
        assert!(matches!(policy.rule(&Method::POST, "/incidents"), Rule::Require(p) if p[0] == "create"));
        assert!(matches!(policy.rule(&Method::PATCH, "/incidents/42"), Rule::Require(p) if p[0] == "edit"));
        assert!(matches!(policy.rule(&get, "/other"), Rule::Deny));
        let lenient = policy.authenticated_by_default();
        assert!(matches!(lenient.rule(&get, "/other"), Rule::Require(p) if p.is_empty()));
    }
}
