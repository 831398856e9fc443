//! Operating the server: bootstrap, restart, health, reflection, graceful shutdown, and the real
//! binary's logs never containing a secret.

use std::time::Duration;

use apikeys::{pb, server::Application};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::harness::*;

#[tokio::test]
async fn first_start_bootstraps_once_with_a_private_token_file() {
    let app = TestApp::spawn().await;
    let path = app.config.bootstrap_token_path();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let mut client = app.client().await;
    let principal = authenticate_token(&mut client, &app.admin_token, &["api_keys_admin"]).await.unwrap();
    let catalog = client.list_permissions(pb::ListPermissionsRequest {}).await.unwrap().into_inner();
    assert_eq!(principal.permissions.len(), catalog.permissions.len(), "the first admin holds every permission");
    let audit = app.store.audit_events(credential(&app.admin_token).key_id).await.unwrap();
    assert_eq!(audit[0].action, "BOOTSTRAP");
    assert_eq!(audit[0].actor_type, "SYSTEM");

    // A restart over the same database does not bootstrap again, and the token keeps working.
    let app_token_before_restart = app.admin_token.clone();
    std::fs::remove_file(&path).unwrap();
    let config = app.config.clone();
    let db = app.stop().await;
    let admin_token = app_token_before_restart;
    let again = TestApp::start(db, config).await;
    assert!(!path.exists(), "no second bootstrap");
    let listed = again.client_as(&admin_token).await.list(Default::default()).await.unwrap();
    assert_eq!(listed.api_keys.len(), 1, "still exactly one administrator");
}

#[tokio::test]
async fn restart_keeps_keys_and_credentials() {
    let app = TestApp::spawn().await;
    let admin_token = app.admin_token.clone();
    let created = app.admin().await.create("Survivor", &["read_data"]).await.unwrap();
    let config = app.config.clone();
    let db = app.stop().await;
    std::fs::remove_file(config.bootstrap_token_path()).unwrap();
    let again = TestApp::start(db, config).await;
    let mut client = again.client().await;
    authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    authenticate_token(&mut client, &admin_token, &["api_keys_admin"]).await.unwrap();
}

#[tokio::test]
async fn health_follows_the_database_and_shutdown() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel().await);
    let check = |service: &str| HealthCheckRequest { service: service.to_owned() };
    for service in ["", "apikeys.v1.ApiKeyService"] {
        let status = health.check(check(service)).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
    // Health is public: no credentials were sent. Now cut the database off.
    app.store.connection().clone().close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = health.check(check("")).await.unwrap().into_inner().status();
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "health never noticed the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reflection_lists_and_describes_the_service() {
    let app = TestApp::spawn().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let ask = |request: MessageRequest| {
        tokio_stream::once(ServerReflectionRequest { host: String::new(), message_request: Some(request) })
    };
    let mut stream =
        reflection.server_reflection_info(ask(MessageRequest::ListServices(String::new()))).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let services: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(services.contains(&"apikeys.v1.ApiKeyService".to_owned()), "{services:?}");
    assert!(!services.iter().any(|s| s.starts_with("incidents.")), "only what this server serves: {services:?}");

    let mut stream = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol("apikeys.v1.CreateApiKeyRequest".into())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let decoded: Vec<prost_types::FileDescriptorProto> =
        files.file_descriptor_proto.iter().map(|b| prost::Message::decode(b.as_slice()).unwrap()).collect();
    let ours = decoded.iter().find(|f| f.package() == "apikeys.v1").expect("apikeys.v1 file");
    assert!(ours.message_type.iter().any(|m| m.name() == "CreateApiKeyRequest"));
    let rows = apikeys::methods::all().iter().filter(|m| m.path.starts_with("/apikeys.v1.")).count();
    assert!(ours.service.iter().any(|s| s.name() == "ApiKeyService" && s.method.len() == rows), "one row per RPC");

    // grpcurl resolves health through reflection too (issue 7.1).
    assert_reflects(app.channel().await, "grpc.health.v1.Health").await;
}

/// Asserts that the server behind `channel` describes `service` through reflection v1 and v1alpha.
pub async fn assert_reflects(channel: tonic::transport::Channel, service: &str) {
    let symbol = MessageRequest::FileContainingSymbol(service.to_owned());
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(symbol) };
    let mut v1 = ServerReflectionClient::new(channel.clone());
    let answer = v1.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner().message().await;
    let response = answer.unwrap().unwrap().message_response;
    assert!(matches!(response, Some(MessageResponse::FileDescriptorResponse(_))), "v1: {service}: {response:?}");

    use tonic_reflection::pb::v1alpha as alpha;
    let symbol = alpha::server_reflection_request::MessageRequest::FileContainingSymbol(service.to_owned());
    let request = alpha::ServerReflectionRequest { host: String::new(), message_request: Some(symbol) };
    let mut v1alpha = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let answer =
        v1alpha.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner().message().await;
    let response = answer.unwrap().unwrap().message_response;
    assert!(
        matches!(response, Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))),
        "v1alpha: {service}: {response:?}"
    );
}

/// Runs the real binary with debug logs, drives it through every secret-bearing RPC, and checks that
/// no secret or token ever reaches its output.
#[tokio::test]
async fn the_binary_never_logs_a_secret() {
    let db = TestDb::new().await;
    let mut server = Binary::serve(&db, &["--log-level", "trace"]).await;
    let channel = tonic::transport::Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
    let token_path = db.dir.path().join("data").join("bootstrap-token");
    let admin_token = std::fs::read_to_string(&token_path).unwrap().trim().to_owned();
    let admin = Client {
        inner: pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone()),
        authorization: format!("Bearer {admin_token}"),
    };
    let mut secrets = vec![admin_token.clone(), credential(&admin_token).secret.expose_text()];
    let created = admin.create("Logged", &["read_data"]).await.unwrap();
    secrets.extend([created.token.clone(), created.secret.clone()]);
    let id = created.api_key.unwrap().id;
    let mut client = pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone());
    authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    let _ = authenticate_token(&mut client, &created.token, &["edit_data"]).await;
    let regenerated = admin.regenerate(&id, "", false).await.unwrap();
    secrets.extend([regenerated.token.clone(), regenerated.secret.clone()]);
    let _ = authenticate_token(&mut client, &created.token, &[]).await;
    admin.delete(&id, "", false).await.unwrap();

    // A long path whose 200th byte falls inside a UTF-8 character: logged cut at a character
    // boundary, not whole (issue 7.10).
    let long_path = format!("/{}é{}", "a".repeat(198), "b".repeat(4000));
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(long_path.as_str()).unwrap();
    let codec = tonic_prost::ProstCodec::<pb::ListPermissionsRequest, pb::ListPermissionsResponse>::default();
    let refused = grpc.unary(tonic::Request::new(pb::ListPermissionsRequest {}), path, codec).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "not in the access policy: {refused:?}");

    // SIGTERM: graceful shutdown.
    let logs = server.terminate();

    assert!(logs.contains("bootstrap-token"), "the token file path is logged");
    assert!(logs.contains("API key created"), "logs were captured at all");
    assert!(logs.contains("shutting down"));
    // Colour codes only on a terminal; these logs went to a file (issue 7.3).
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in a log file");
    assert!(logs.contains(&long_path[..199]), "the cut path is logged");
    assert!(!logs.contains("bbbbbbbbbb"), "the path was logged whole");
    // One span per RPC, with the method, the code and the authenticated key's ID.
    let admin_id = credential(&admin_token).key_id.to_string();
    let create_line = logs
        .lines()
        .find(|l| l.contains("rpc finished") && l.contains("CreateApiKey"))
        .unwrap_or_else(|| panic!("no rpc span for CreateApiKey in:\n{logs}"));
    assert!(create_line.contains("method=\"/apikeys.v1.ApiKeyService/CreateApiKey\""), "{create_line}");
    assert!(create_line.contains(&format!("key_id={admin_id}")), "{create_line}");
    assert!(create_line.contains("code=\"OK\""), "{create_line}");
    assert!(create_line.contains("latency_ms="), "{create_line}");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
}

/// Issue 7.10: the data directory is 0700 and the SQLite database and its WAL are 0600, whatever
/// the umask; the bootstrap token is written through a private temporary file.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let app = TestApp::spawn().await;
    let data_dir = &app.config.data_dir;
    assert_eq!(mode(data_dir), 0o700, "{}", data_dir.display());
    assert_eq!(mode(&app.config.bootstrap_token_path()), 0o600);
    if app.db.pg.is_none() {
        app.admin().await.create("Written", &[]).await.unwrap();
        for file in ["apikeys.db", "apikeys.db-wal", "apikeys.db-shm"] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
    }
    let names: Vec<String> =
        std::fs::read_dir(data_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "no staged token left behind: {names:?}");
}

/// Issue 7.10: several instances bootstrapping one empty database at once, with one token path: one
/// wins, and the token file holds the winner's token (the losers never touch it).
#[tokio::test]
async fn racing_bootstraps_keep_the_winners_token() {
    let db = TestDb::new().await;
    let config = db.config();
    // Migrated first, so the race is about the bootstrap alone.
    apikeys::server::open_store(&config).await.unwrap();
    let builds = futures::future::join_all((0..4).map(|_| Application::build(config.clone()))).await;
    let apps: Vec<Application> = builds.into_iter().map(|b| b.expect("every instance starts")).collect();
    drop(apps);
    let token =
        std::fs::read_to_string(config.bootstrap_token_path()).expect("the winner's token file").trim().to_owned();
    let names: Vec<String> = std::fs::read_dir(&config.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "losers cleaned up after themselves: {names:?}");
    let app = TestApp::start(db, config).await;
    let listed = app.client_as(&token).await.list(Default::default()).await.expect("the token in the file works");
    assert_eq!(listed.api_keys.len(), 1, "one org, one administrator");
}

/// Issue 7.8: a request larger than the decode limit is refused with a clear error, and the same
/// connection keeps serving.
#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(|c| c.transport.max_request_bytes = 4096).await;
    let admin = app.admin().await;
    let huge =
        pb::CreateApiKeyRequest { display_name: "Big".into(), description: "x".repeat(5000), ..Default::default() };
    let status = admin.create_full(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("4096"), "names the limit: {}", status.message());
    admin.create("Small", &[]).await.expect("the connection still serves");
    let listed = admin.list(Default::default()).await.unwrap();
    assert!(listed.api_keys.iter().all(|k| k.display_name != "Big"), "nothing written");
    // Default limit: 64 KiB, far above any valid request.
    assert_eq!(apikeys::config::TransportConfig::default().max_request_bytes, 65536);
}

/// Issue 7.10: `hash_queue = 0` means "never wait", not "always refuse": the server bootstraps and
/// issues keys.
#[tokio::test]
async fn a_hash_queue_of_zero_never_waits_but_still_hashes() {
    let app = TestApp::spawn_with(|c| c.hash_queue = 0).await;
    let created = app.admin().await.create("No queue", &["read_data"]).await.unwrap();
    authenticate_token(&mut app.client().await, &created.token, &["read_data"]).await.unwrap();
}

/// Issue 7.10: settings that would fail later (an `Instant + ttl` overflow on every verification, a
/// zero transport limit) stop the server at startup with a message naming them.
#[tokio::test]
async fn startup_refuses_settings_that_would_fail_later() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").display().to_string();
    apikeys(&["serve", "--data-dir", &data_dir, "--auth-cache-ttl-secs", "18446744073709551615"])
        .await
        .fails_with("auth_cache_ttl_secs");
    let file = dir.path().join("apikeys.toml");
    std::fs::write(&file, "[transport]\nrequest_timeout_secs = 0\n").unwrap();
    apikeys(&["serve", "--data-dir", &data_dir, "--config", &file.display().to_string()])
        .await
        .fails_with("transport.request_timeout_secs");
    let db = TestDb::new().await;
    let mut config = db.config();
    config.auth_cache_ttl_secs = u64::MAX;
    let error = Application::build(config).await.unwrap_err().to_string();
    assert!(error.contains("at most 86400"), "{error}");
}

/// Issue 9: one client address cannot keep more than `max_in_flight_per_peer` calls in flight:
/// beyond that its calls are refused at once (PEER_BUSY), while another address is served.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_calls() {
    let app = TestApp::spawn_with(|c| {
        c.transport.max_in_flight_per_peer = 2;
        c.argon2_memory_kib = 8 * 1024;
        c.argon2_iterations = 2;
        c.hash_concurrency = 8;
    })
    .await;
    let admin = app.admin().await;
    let mut tokens = Vec::new();
    for i in 0..9 {
        tokens.push(admin.create(&format!("Fresh {i}"), &[]).await.unwrap().token);
    }
    let other_address = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut elsewhere = pb::api_key_service_client::ApiKeyServiceClient::new(other_address);
    let client = app.client().await;
    let crowd: Vec<_> = tokens[..8]
        .iter()
        .map(|token| {
            let (mut client, token) = (client.clone(), token.clone());
            tokio::spawn(async move { authenticate_token(&mut client, &token, &[]).await.map(|_| ()) })
        })
        .collect();
    let served_elsewhere = authenticate_token(&mut elsewhere, &tokens[8], &[]).await;
    let mut busy = 0;
    for call in futures::future::join_all(crowd).await {
        if let Err(status) = call.unwrap() {
            assert_status(Err::<(), _>(status), tonic::Code::ResourceExhausted, "PEER_BUSY");
            busy += 1;
        }
    }
    assert!(busy >= 3, "8 concurrent first verifications from one address, 2 allowed: {busy} refused");
    served_elsewhere.expect("another address is served meanwhile");
}
