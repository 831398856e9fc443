//! End to end through the reference consumer: a real apikeys, the incident service of
//! `examples/incident_service/` behind the auth layer with a `RemoteAuthenticator`, and real clients,
//! all over loopback TCP. Covers both credential forms, wrong secrets, missing permissions, revocation
//! bounded by the consumer cache TTL when the change stream is off, apikeys outages, public health, the HTTP route, single-flight,
//! and the API key account rules.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use apikeys::auth::{
    Credential, Secret,
    remote::{RemoteAuthenticator, RemoteConfig},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt as _;

use crate::{
    harness::*,
    incident_service::{
        self,
        pb::{
            CreateIncidentRequest, Incident, ListIncidentsRequest, UpdateIncidentRequest,
            incident_service_client::IncidentServiceClient,
        },
    },
};

pub const ALL: &[&str] = &["create_incident", "read_all_incidents", "edit_all_incidents_fields"];

/// A running incident service verifying credentials against `apikeys`.
pub struct Consumer {
    pub addr: SocketAddr,
    authenticator: Arc<RemoteAuthenticator>,
    _shutdown: oneshot::Sender<()>,
}

impl Consumer {
    /// A consumer following apikeys' change stream (the default), once the stream is open.
    pub async fn spawn(apikeys: SocketAddr, cache_ttl: Duration) -> Self {
        let config = RemoteConfig { cache_ttl, timeout: Duration::from_secs(2), ..RemoteConfig::default() };
        let consumer = Self::spawn_with(apikeys, config).await;
        consumer.wait_until_watching().await;
        consumer
    }

    /// A consumer that does not follow the change stream: the cache TTL alone bounds revocation.
    pub async fn spawn_unwatched(apikeys: SocketAddr, cache_ttl: Duration) -> Self {
        let config =
            RemoteConfig { cache_ttl, timeout: Duration::from_secs(2), watch: false, ..RemoteConfig::default() };
        Self::spawn_with(apikeys, config).await
    }

    pub async fn spawn_with(apikeys: SocketAddr, config: RemoteConfig) -> Self {
        let channel = Channel::from_shared(format!("http://{apikeys}")).unwrap().connect_lazy();
        let authenticator = Arc::new(RemoteAuthenticator::new(channel, config).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let store = incident_service::Store::default();
        tokio::spawn(incident_service::serve(listener, authenticator.clone(), store, async {
            let _ = rx.await;
        }));
        Self { addr, authenticator, _shutdown: tx }
    }

    pub fn authenticator(&self) -> &RemoteAuthenticator {
        &self.authenticator
    }

    /// Waits until the change stream is open.
    pub async fn wait_until_watching(&self) {
        let stats = self.authenticator.watch_stats();
        for _ in 0..500 {
            if stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the consumer did not open the change stream");
    }

    async fn client(&self) -> IncidentServiceClient<Channel> {
        IncidentServiceClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    pub async fn create(&self, authorization: &str, request: CreateIncidentRequest) -> Result<Incident, Status> {
        let response = self.client().await.create_incident(authed(request, authorization)).await?;
        Ok(response.into_inner().incident.unwrap())
    }

    pub async fn list(&self, authorization: &str) -> Result<Vec<Incident>, Status> {
        let response = self.client().await.list_incidents(authed(ListIncidentsRequest {}, authorization)).await?;
        Ok(response.into_inner().incidents)
    }

    pub async fn update(&self, authorization: &str, request: UpdateIncidentRequest) -> Result<Incident, Status> {
        let response = self.client().await.update_incident(authed(request, authorization)).await?;
        Ok(response.into_inner().incident.unwrap())
    }

    /// `GET path` over HTTP/1.1 with an optional `authorization` header: status, headers, body.
    async fn http_get(&self, path: &str, authorization: Option<&str>) -> HttpResponse {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let auth = authorization.map(|a| format!("authorization: {a}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n{auth}connection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        HttpResponse::parse(&raw)
    }
}

struct HttpResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl HttpResponse {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP response");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = if headers.get("transfer-encoding").is_some_and(|v| v == "chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Self { status, headers, body }
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(token: &str) -> String {
    credential(token).basic()
}

pub fn titled(title: &str) -> CreateIncidentRequest {
    CreateIncidentRequest { title: title.to_owned(), ..Default::default() }
}

/// Asserts code and ErrorInfo reason of an error raised by the incident service itself.
#[track_caller]
fn assert_rule<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo attached");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, incident_service::ERROR_DOMAIN), "{status:?}");
    status
}

#[tokio::test]
async fn valid_key_works_with_bearer_and_basic_and_wrong_secret_is_refused() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let key = app.admin().await.create("Pager", ALL).await.unwrap();
    let key_id = key.api_key.unwrap().id;

    let by_bearer = consumer.create(&bearer(&key.token), titled("Disk full")).await.unwrap();
    assert_eq!(by_bearer.created_by, key_id);
    let by_basic = consumer.create(&basic(&key.token), titled("CPU hot")).await.unwrap();
    assert_eq!(by_basic.created_by, key_id);
    let listed = consumer.list(&basic(&key.token)).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(), ["Disk full", "CPU hot"]);

    let wrong = Credential { key_id: credential(&key.token).key_id, secret: Secret::generate().unwrap() };
    for authorization in [wrong.bearer(), wrong.basic(), "Bearer apk_nonsense".to_owned()] {
        assert_status(consumer.list(&authorization).await, Code::Unauthenticated, "UNAUTHENTICATED");
    }
    let mut client = consumer.client().await;
    let missing = client.list_incidents(ListIncidentsRequest {}).await;
    assert_status(missing, Code::Unauthenticated, "UNAUTHENTICATED");
    // The right secret still works after the wrong ones: failures were not cached against the key.
    consumer.list(&bearer(&key.token)).await.unwrap();
}

#[tokio::test]
async fn missing_permission_is_named() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let reader = app.admin().await.create("Reader", &["read_all_incidents"]).await.unwrap();

    let status = assert_status(
        consumer.create(&bearer(&reader.token), titled("nope")).await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );
    assert!(status.message().contains("create_incident"), "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["permissions"], "create_incident");
    let update = UpdateIncidentRequest { id: "x".into(), ..Default::default() };
    let status = assert_status(
        consumer.update(&bearer(&reader.token), update).await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );
    assert!(status.message().contains("edit_all_incidents_fields"), "{status:?}");
    assert!(consumer.list(&bearer(&reader.token)).await.unwrap().is_empty());
}

#[tokio::test]
async fn without_the_change_stream_a_deleted_key_passes_only_until_the_consumer_cache_ttl() {
    let ttl = Duration::from_millis(1000);
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn_unwatched(app.addr, ttl).await;
    let admin = app.admin().await;
    let created = admin.create("Doomed", ALL).await.unwrap();
    let key = created.api_key.unwrap();

    consumer.list(&bearer(&created.token)).await.unwrap();
    let cached_at = Instant::now();
    admin.delete(&key.id, &key.etag, false).await.unwrap();
    // apikeys itself refuses the key at once ...
    assert_status(
        authenticate_token(&mut app.client().await, &created.token, &[]).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    // ... while the consumer's cache lets it pass until its TTL: the documented bound.
    consumer.list(&bearer(&created.token)).await.unwrap();
    assert!(cached_at.elapsed() < ttl, "the test machine is too slow to observe the cached window");

    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(100)).await;
    assert_status(consumer.list(&bearer(&created.token)).await, Code::Unauthenticated, "UNAUTHENTICATED");
}

#[tokio::test]
async fn without_the_change_stream_a_regenerated_secret_replaces_the_old_one_after_the_ttl() {
    let ttl = Duration::from_millis(1000);
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn_unwatched(app.addr, ttl).await;
    let admin = app.admin().await;
    let created = admin.create("Rotated", ALL).await.unwrap();
    let key = created.api_key.unwrap();

    consumer.list(&basic(&created.token)).await.unwrap();
    let cached_at = Instant::now();
    let regenerated = admin.regenerate(&key.id, &key.etag, false).await.unwrap();
    consumer.list(&bearer(&regenerated.token)).await.unwrap();
    consumer.list(&basic(&created.token)).await.unwrap();
    assert!(cached_at.elapsed() < ttl, "the test machine is too slow to observe the cached window");

    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(100)).await;
    assert_status(consumer.list(&basic(&created.token)).await, Code::Unauthenticated, "UNAUTHENTICATED");
    consumer.list(&bearer(&regenerated.token)).await.unwrap();
    consumer.list(&basic(&regenerated.token)).await.unwrap();
}

#[tokio::test]
async fn apikeys_down_refuses_unseen_credentials_and_cached_ones_pass_until_the_ttl() {
    let ttl = Duration::from_millis(1500);
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, ttl).await;
    let admin = app.admin().await;
    let seen = admin.create("Seen", ALL).await.unwrap().token;
    let unseen = admin.create("Unseen", ALL).await.unwrap().token;
    consumer.list(&bearer(&seen)).await.unwrap();
    let cached_at = Instant::now();

    let mut config = app.config.clone();
    config.listen = app.addr;
    drop(admin);
    let db = app.stop().await;

    assert_status(consumer.list(&bearer(&unseen)).await, Code::Unavailable, "BACKEND_UNAVAILABLE");
    // The change stream ended with the server, and the consumer says so: the TTL is the bound now.
    let connected = &consumer.authenticator().watch_stats().connected;
    assert!(!connected.load(std::sync::atomic::Ordering::Relaxed), "the stream is reported down");
    let http = consumer.http_get("/v1/incidents", Some(&bearer(&unseen))).await;
    assert_eq!(http.status, 503);
    consumer.list(&bearer(&seen)).await.unwrap();
    assert!(cached_at.elapsed() < ttl, "the test machine is too slow to observe the cached window");
    // Once its entry expires, a cached credential is refused too: fail closed.
    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(100)).await;
    assert_status(consumer.list(&bearer(&seen)).await, Code::Unavailable, "BACKEND_UNAVAILABLE");

    // apikeys comes back on the same address: the refusals were not cached.
    let _again = TestApp::start(db, config).await;
    let mut last = Err(Status::unavailable("not tried"));
    for _ in 0..50 {
        last = consumer.list(&bearer(&unseen)).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.unwrap();
    consumer.list(&bearer(&seen)).await.unwrap();
    consumer.wait_until_watching().await;
}

#[tokio::test]
async fn health_is_public_and_unlisted_paths_are_refused() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let channel = Channel::from_shared(format!("http://{}", consumer.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let check = HealthCheckRequest { service: "incidents.v1.IncidentService".into() };
    let answer = health.check(check).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);

    let key = app.admin().await.create("All", ALL).await.unwrap();
    let unlisted = consumer.http_get("/v1/other", Some(&bearer(&key.token))).await;
    assert_eq!(unlisted.status, 403);
}

#[tokio::test]
async fn http_route_answers_401_403_and_200_json() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let all = admin.create("All", ALL).await.unwrap();
    let creator = admin.create("Creator", &["create_incident"]).await.unwrap();
    consumer.create(&bearer(&all.token), titled("Over HTTP")).await.unwrap();

    let missing = consumer.http_get("/v1/incidents", None).await;
    assert_eq!(missing.status, 401);
    assert!(missing.headers["www-authenticate"].contains("Bearer"), "{:?}", missing.headers);
    assert!(missing.headers["www-authenticate"].contains("Basic"), "{:?}", missing.headers);
    let wrong = consumer.http_get("/v1/incidents", Some("Bearer apk_nonsense")).await;
    assert_eq!(wrong.status, 401);

    let forbidden = consumer.http_get("/v1/incidents", Some(&bearer(&creator.token))).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.headers["www-authenticate"].contains(r#"scope="read_all_incidents""#), "{:?}", forbidden.headers);

    for authorization in [bearer(&all.token), basic(&all.token)] {
        let ok = consumer.http_get("/v1/incidents", Some(&authorization)).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(ok.headers["content-type"].starts_with("application/json"));
        let json: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(json["incidents"][0]["title"], "Over HTTP");
        assert_eq!(json["incidents"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn concurrent_misses_for_one_credential_make_one_upstream_call() {
    // No cache at apikeys, and argon2 slow enough that overlapping calls would show: every upstream
    // Authenticate then costs exactly one argon2 verification, which the hasher counts.
    let app = TestApp::spawn_with(|config| {
        config.auth_cache_ttl_secs = 0;
        config.argon2_memory_kib = 8 * 1024;
        config.argon2_iterations = 2;
    })
    .await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let fresh = admin.create("Fresh", ALL).await.unwrap().token;
    let other = admin.create("Other", ALL).await.unwrap().token;
    let clients: Vec<_> = futures::future::join_all((0..20).map(|_| consumer.client())).await;

    let before = app.authenticator.hasher().computed();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks = clients.into_iter().map(|mut client| {
        let (barrier, authorization) = (barrier.clone(), bearer(&fresh));
        tokio::spawn(async move {
            barrier.wait().await;
            client.list_incidents(authed(ListIncidentsRequest {}, &authorization)).await
        })
    });
    for result in futures::future::join_all(tasks).await {
        result.unwrap().unwrap();
    }
    assert_eq!(app.authenticator.hasher().computed() - before, 1, "20 concurrent misses, one upstream call");
    assert_eq!(consumer.authenticator.cache().len(), 1);

    // A different credential is a different flight.
    consumer.list(&bearer(&other)).await.unwrap();
    consumer.list(&bearer(&fresh)).await.unwrap();
    assert_eq!(app.authenticator.hasher().computed() - before, 2);
}

#[tokio::test]
async fn unowned_incidents_go_to_the_principals_default_group() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    // An org whose default group is not the bootstrap's "default", so a hard-coded group would show.
    let (keys, _, _) = apikeys::server::components(&app.config, app.store.clone(), None).await.unwrap();
    let (_, issued) = keys.create_org_admin("acme", "acme-oncall", |_| Ok(())).await.unwrap();
    let acme_admin = app.client_as(&issued.credential.token()).await;
    let key = acme_admin.create("Creator", ALL).await.unwrap();
    let principal = authenticate_token(&mut app.client().await, &key.token, &[]).await.unwrap();
    let group = principal.restrictions.unwrap().unowned_incident_group;
    assert_eq!(group, "acme-oncall");

    let unowned = consumer.create(&bearer(&key.token), titled("No owner")).await.unwrap();
    assert_eq!((unowned.owner.as_str(), unowned.owner_group.as_str()), ("", group.as_str()));
    assert_eq!(unowned.org_id, principal.org_id);

    let owned =
        CreateIncidentRequest { title: "Owned".into(), owner: "user:alice".into(), members: vec!["user:bob".into()] };
    let owned = consumer.create(&bearer(&key.token), owned).await.unwrap();
    assert_eq!((owned.owner.as_str(), owned.owner_group.as_str()), ("user:alice", ""));
    assert_eq!(owned.members, ["user:bob"]);

    // Another organization sees none of it.
    let other_org = app.create_org("globex").await;
    assert!(consumer.list(&bearer(&other_org)).await.unwrap().is_empty());
    assert_eq!(consumer.list(&bearer(&key.token)).await.unwrap().len(), 2);
    let elsewhere = UpdateIncidentRequest { id: owned.id.clone(), title: "hijack".into(), ..Default::default() };
    assert_rule(consumer.update(&bearer(&other_org), elsewhere).await, Code::NotFound, "INCIDENT_NOT_FOUND");
}

#[tokio::test]
async fn an_api_key_cannot_be_owner_or_member() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let created = admin.create("Bot", ALL).await.unwrap();
    let own_id = created.api_key.unwrap().id;
    let other_key = format!("apikey:{}", uuid::Uuid::new_v4());
    let auth = bearer(&created.token);

    for owner in [own_id.clone(), other_key.clone()] {
        let request = CreateIncidentRequest { title: "t".into(), owner, ..Default::default() };
        let status = assert_rule(
            consumer.create(&auth, request).await,
            Code::FailedPrecondition,
            "API_KEY_CANNOT_OWN_INCIDENTS",
        );
        assert!(status.message().contains("cannot own incidents"), "{status:?}");
    }
    for member in [own_id.clone(), other_key.clone()] {
        let request =
            CreateIncidentRequest { title: "t".into(), members: vec!["user:bob".into(), member], ..Default::default() };
        let status = assert_rule(
            consumer.create(&auth, request).await,
            Code::FailedPrecondition,
            "API_KEY_CANNOT_BE_INCIDENT_MEMBER",
        );
        assert!(status.message().contains("members[1]"), "{status:?}");
    }
    assert!(consumer.list(&auth).await.unwrap().is_empty(), "nothing was stored");

    let incident = consumer.create(&auth, titled("Real")).await.unwrap();
    let make_owner = UpdateIncidentRequest { id: incident.id.clone(), owner: own_id.clone(), ..Default::default() };
    assert_rule(consumer.update(&auth, make_owner).await, Code::FailedPrecondition, "API_KEY_CANNOT_OWN_INCIDENTS");
    let add_member =
        UpdateIncidentRequest { id: incident.id.clone(), add_members: vec![other_key], ..Default::default() };
    assert_rule(
        consumer.update(&auth, add_member).await,
        Code::FailedPrecondition,
        "API_KEY_CANNOT_BE_INCIDENT_MEMBER",
    );

    // A person is fine, and takes the incident from the default group.
    let to_user = UpdateIncidentRequest {
        id: incident.id.clone(),
        owner: "user:carol".into(),
        add_members: vec!["user:dave".into()],
        ..Default::default()
    };
    let updated = consumer.update(&auth, to_user).await.unwrap();
    assert_eq!((updated.owner.as_str(), updated.owner_group.as_str()), ("user:carol", ""));
    assert_eq!(updated.members, ["user:dave"]);

    // Bad input is INVALID_ARGUMENT, never INTERNAL.
    assert_rule(consumer.create(&auth, titled("  ")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    let no_id = UpdateIncidentRequest::default();
    assert_rule(consumer.update(&auth, no_id).await, Code::InvalidArgument, "INVALID_ARGUMENT");
}
