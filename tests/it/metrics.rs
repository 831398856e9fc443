//! Prometheus metrics on their own listener: scraped over HTTP before and after some traffic.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use apikeys::pb;
use tonic::Code;

use crate::harness::*;

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_lowercase().contains("content-type: application/openmetrics-text"), "{response}");
    response
}

/// The value of the sample whose line starts with `series` (name and labels). A missing series fails
/// the test: a renamed metric must not read as zero.
#[track_caller]
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let app = TestApp::spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = app.metrics_addr.expect("metrics listener bound");
    let before = scrape(addr).await;
    assert!(before.contains("apikeys_db_pool_connections"), "{before}");
    assert_eq!(value(&before, "apikeys_auth_cache_hits_total"), 0.0);
    // The successes of every method are series from startup (made then, counted without a lookup).
    let create = r#"apikeys_rpc_requests_total{method="/apikeys.v1.ApiKeyService/CreateApiKey",code="OK"}"#;
    assert_eq!(value(&before, create), 0.0);
    assert_eq!(value(&before, r#"apikeys_authenticate_total{outcome="OK"}"#), 0.0);

    let created = app.admin().await.create("Metered", &["read_data"]).await.unwrap();
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    let _ = authenticate_token(&mut client, &created.token, &["edit_data"]).await.unwrap_err();
    // A typo in the checksum (never the same character, or the "typo" would be the real token).
    let last = if created.token.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &created.token[..created.token.len() - 1]);
    let _ = authenticate_token(&mut client, &wrong, &[]).await.unwrap_err();

    let after = scrape(addr).await;
    let auth = r#"apikeys_rpc_requests_total{method="/apikeys.v1.ApiKeyService/Authenticate",code="#;
    assert_eq!(value(&after, &format!("{auth}\"OK\"}}")), 2.0, "{after}");
    assert_eq!(value(&after, &format!("{auth}\"PERMISSION_DENIED\"}}")), 1.0);
    assert_eq!(value(&after, &format!("{auth}\"UNAUTHENTICATED\"}}")), 1.0);
    assert_eq!(value(&after, create), 1.0);
    let latency = r#"apikeys_rpc_duration_seconds_count{method="/apikeys.v1.ApiKeyService/CreateApiKey",code="OK"}"#;
    assert_eq!(value(&after, latency), 1.0);
    assert_eq!(value(&after, r#"apikeys_authenticate_total{outcome="OK"}"#), 2.0);
    assert_eq!(value(&after, r#"apikeys_authenticate_total{outcome="MISSING_PERMISSIONS"}"#), 1.0);
    assert_eq!(value(&after, r#"apikeys_authenticate_total{outcome="UNAUTHENTICATED"}"#), 1.0);
    assert!(value(&after, "apikeys_auth_cache_hits_total") >= 2.0, "{after}");
    assert!(value(&after, "apikeys_auth_cache_misses_total") >= 1.0);
    assert!(value(&after, "apikeys_argon2_computations_total") > value(&before, "apikeys_argon2_computations_total"));
    assert!(value(&after, "apikeys_argon2_waits_total") >= 1.0);
    assert!(after.contains("apikeys_argon2_wait_seconds_total"));
    assert!(after.contains("apikeys_argon2_waiting 0"));
    assert!(value(&after, "apikeys_db_pool_connections") >= 1.0);
    assert!(!after.contains(&created.token) && !after.contains(&created.secret));
}

/// The local addresses (hex, as /proc shows them) of the TCP sockets in LISTEN state that process
/// `pid` holds.
#[cfg(target_os = "linux")]
fn listening(pid: u32) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    let sockets: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Columns: sl local_address rem_address st ... inode (the tenth).
            if fields.len() > 9 && fields[3] == "0A" && sockets.iter().any(|s| s == fields[9]) {
                found.push(fields[1].to_owned());
            }
        }
    }
    found
}

/// Without `metrics_listen`, the real binary listens on the gRPC port and nothing else (with the
/// console off); with it, on one more.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn metrics_are_off_by_default() {
    let db = TestDb::new().await;
    let server = Binary::serve(&db, &["--console", "false"]).await;
    let ports = listening(server.pid());
    assert_eq!(ports.len(), 1, "one listener, the gRPC port: {ports:?}");
    assert!(ports[0].ends_with(&format!(":{:04X}", server.addr.port())), "{ports:?}");

    let with = TestDb::new().await;
    let metered = Binary::serve(&with, &["--metrics-listen", "127.0.0.1:0", "--console", "false"]).await;
    assert_eq!(listening(metered.pid()).len(), 2, "gRPC and metrics");
}

/// A streaming RPC is counted when it ends, with the code it ends with: here a health Watch that the
/// client drops after its first message is CANCELLED (it used to count as OK at its headers), and a
/// reflection stream the client closes ends OK.
#[tokio::test]
async fn streams_are_counted_when_they_end() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };

    let app = TestApp::spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = app.metrics_addr.expect("metrics listener bound");
    let mut health = HealthClient::new(app.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    watch.message().await.unwrap().expect("the current status");
    let watch_series = r#"apikeys_rpc_requests_total{method="/grpc.health.v1.Health/Watch",code="#;
    // Every method's OK series exists from startup, at zero.
    let counted = |text: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(watch_series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted(&scrape(addr).await), 0.0, "not counted while it runs");
    drop(watch);

    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::once(list)).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    let reflection_ok =
        r#"apikeys_rpc_requests_total{method="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",code="OK"}"#;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(addr).await;
        if text.contains(&format!("{watch_series}\"CANCELLED\"}}")) && value(&text, reflection_ok) > 0.0 {
            assert_eq!(value(&text, &format!("{watch_series}\"CANCELLED\"}}")), 1.0);
            assert_eq!(value(&text, &format!("{watch_series}\"OK\"}}")), 0.0, "{text}");
            assert_eq!(value(&text, reflection_ok), 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "streams never counted:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A call the server cuts short at its own limit (`transport.request_timeout_secs`) or at its
/// caller's `grpc-timeout` is answered DEADLINE_EXCEEDED (by apikeys, ahead of tonic's own timer,
/// which would say CANCELLED) and counted so, while its change commits in full; a call the client
/// abandons before any answer counts as CANCELLED; a stream outlives the limit.
#[tokio::test]
async fn calls_cut_short_are_counted_with_their_code() {
    let app = TestApp::spawn_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.transport.request_timeout_secs = 1;
    })
    .await;
    let addr = app.metrics_addr.expect("metrics listener bound");
    let admin = app.admin().await;
    let key = admin.create("Slow", &["read_data"]).await.unwrap().api_key.unwrap();
    let request = pb::WatchKeyChangesRequest { cursor: String::new() };
    let mut changes = app.client().await.watch_key_changes(request).await.unwrap().into_inner();
    // Every change now takes 3 s after its commit, longer than the server allows a call.
    app.keys.pause_before_invalidation_for_tests(std::time::Duration::from_secs(3));
    let update = |description: &str| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), description: description.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
        ..Default::default()
    };

    let started = std::time::Instant::now();
    let cut = admin.update(update("cut short")).await.unwrap_err();
    assert_eq!(cut.code(), Code::DeadlineExceeded, "{cut:?}");
    assert!(cut.message().contains("request_timeout_secs"), "{cut:?}");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_millis(2500), "{took:?}");

    let mut request = admin.req(update("caller's deadline"));
    request.set_timeout(std::time::Duration::from_millis(300));
    let cut = admin.inner.clone().update_api_key(request).await.unwrap_err();
    assert_eq!(cut.code(), Code::DeadlineExceeded, "{cut:?}");
    assert!(cut.message().contains("grpc-timeout"), "{cut:?}");

    // The client gives up after 300 ms, without telling the server a deadline.
    let abandoned =
        tokio::time::timeout(std::time::Duration::from_millis(300), admin.update(update("abandoned"))).await;
    assert!(abandoned.is_err(), "no answer within 300 ms");

    let series = |code: &str| {
        format!(r#"apikeys_rpc_requests_total{{method="/apikeys.v1.ApiKeyService/UpdateApiKey",code="{code}"}}"#)
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(addr).await;
        if text.contains(&series("CANCELLED")) && text.contains(&series("DEADLINE_EXCEEDED")) {
            assert_eq!(value(&text, &series("DEADLINE_EXCEEDED")), 2.0, "{text}");
            assert_eq!(value(&text, &series("CANCELLED")), 1.0, "{text}");
            assert_eq!(value(&text, &series("OK")), 0.0, "{text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "calls cut short never counted:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Every change committed whole, whatever its caller saw.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    app.keys.pause_before_invalidation_for_tests(std::time::Duration::ZERO);
    assert_eq!(admin.get(&key.id).await.unwrap().description, "abandoned");

    // The stream opened before all this is still open, seconds past the limit, and tells of them.
    let told = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let message = changes.message().await.expect("the stream goes on").expect("not ended");
            if !message.key_digests.is_empty() {
                return message;
            }
        }
    })
    .await
    .expect("a change told within 5 s");
    assert!(!told.key_digests.is_empty());
}
