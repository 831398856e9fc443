//! Last used (issue 12.1): every successful authentication, cache hits included, is noted in
//! memory and written in batches, never one write per request; the latest use wins across
//! replicas, and a graceful stop writes what is pending.

use std::time::Duration;

use apikeys::pb;

use crate::{harness::*, incidents::ALL};

async fn wait_for_use(admin: &Client, id: &str) -> pb::ApiKey {
    for _ in 0..100 {
        let key = admin.get(id).await.unwrap();
        if key.last_used_time.is_some() {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no last use written after 5 s");
}

#[tokio::test]
async fn last_use_is_written_in_batches_with_address_and_agent() {
    let app = TestApp::spawn_with(|config| config.usage_flush_ms = 200).await;
    let admin = app.admin().await;
    let mut keys: Vec<pb::CreateApiKeyResponse> = Vec::new();
    for name in ["Used 0", "Used 1", "Used 2"] {
        keys.push(admin.create(name, ALL).await.unwrap());
    }
    let unused = admin.create("Never used", &[]).await.unwrap().api_key.unwrap();
    let before = app.usage.statements();

    let mut client = app.client().await;
    for _ in 0..100 {
        for key in &keys {
            let request = pb::AuthenticateRequest {
                token: key.token.clone(),
                client_address: "10.1.2.3".into(),
                ..Default::default()
            };
            client.authenticate(request).await.unwrap();
        }
    }
    let used = wait_for_use(&admin, &keys[0].api_key.as_ref().unwrap().id).await;
    assert_eq!(used.last_used_address, "10.1.2.3");
    assert!(used.last_used_agent.contains("tonic"), "{}", used.last_used_agent);
    let at = used.last_used_time.unwrap().seconds;
    assert!((chrono::Utc::now().timestamp() - at).abs() < 10);
    assert_eq!(used.etag, keys[0].api_key.as_ref().unwrap().etag, "a use is not a change of the key");
    // 300 authentications of 3 keys (and the admin's reads): at most two statements per flush (the
    // last uses, the exercised permissions), not one per request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = app.usage.statements() - before;
    assert!((1..=8).contains(&written), "{written} statements for 300 uses");
    for key in &keys[1..] {
        assert!(admin.get(&key.api_key.as_ref().unwrap().id).await.unwrap().last_used_time.is_some());
    }
    assert_eq!(admin.get(&unused.id).await.unwrap().last_used_time, None);
    let events = app.store.audit_events(credential(&keys[0].token).key_id).await.unwrap();
    assert_eq!(events.len(), 1, "uses leave no audit event");

    // The admin's own calls to apikeys count as uses of its key, from this test's address.
    let admin_key = wait_for_use(&admin, &credential(&app.admin_token).key_id.to_string()).await;
    assert_eq!(admin_key.last_used_address, "127.0.0.1");
}

/// A graceful stop writes what is pending; a replica's older report never overwrites a newer one.
#[tokio::test]
async fn pending_uses_survive_a_graceful_stop_and_the_latest_use_wins() {
    let app = TestApp::spawn_with(|config| config.usage_flush_ms = 3_600_000).await;
    let admin = app.admin().await;
    let created = admin.create("Stopped", &[]).await.unwrap();
    let mut client = app.client().await;
    let request = |address: &str| pb::AuthenticateRequest {
        token: created.token.clone(),
        client_address: address.into(),
        ..Default::default()
    };
    client.authenticate(request("10.0.0.1")).await.unwrap();
    let db = app.stop().await;

    let config = db.config();
    let app = TestApp::start(db, config).await;
    let org = app.store.find_org_by_name("default").await.unwrap().unwrap().id;
    let stored = app.store.get_key(org, credential(&created.token).key_id.into()).await.unwrap();
    assert!(stored.last_used_time.is_some(), "written at the graceful stop");
    assert_eq!(stored.last_used_address, "10.0.0.1");

    // An older report (another replica's, flushed late) does not move the time back.
    let older = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let seen = apikeys::usage::Seen {
        time: older,
        address: Some("10.9.9.9".parse().unwrap()),
        agent: "old".into(),
        exercised: Default::default(),
    };
    app.store.record_usage(&[(credential(&created.token).key_id, seen)]).await.unwrap();
    let after = app.store.get_key(stored.org_id, stored.id).await.unwrap();
    assert_eq!((after.last_used_time, after.last_used_address.as_str()), (stored.last_used_time, "10.0.0.1"));
}

/// The least-privilege report: which granted permissions requests actually required, over the API
/// and the CLI (with the update that drops the rest).
#[tokio::test]
async fn the_usage_report_names_the_permissions_a_key_never_needed() {
    let app = TestApp::spawn_with(|config| config.usage_flush_ms = 100).await;
    let admin = app.admin().await;
    let created = admin.create("Over-granted", &["read_data", "read_function", "edit_data"]).await.unwrap();
    let id = created.api_key.as_ref().unwrap().id.clone();
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    // Refused requests exercise nothing.
    let _ = authenticate_token(&mut client, &created.token, &["read_playbook"]).await.unwrap_err();

    let report = |window: Option<prost_types::Duration>| {
        let admin = admin.clone();
        let id = id.clone();
        async move {
            let request = pb::GetApiKeyUsageRequest { id, window };
            admin.inner.clone().get_api_key_usage(admin.req(request)).await.map(tonic::Response::into_inner)
        }
    };
    let mut usage = report(None).await.unwrap();
    for _ in 0..100 {
        if !usage.exercised.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        usage = report(None).await.unwrap();
    }
    assert_eq!(usage.granted, ["edit_data", "read_data", "read_function"]);
    assert_eq!(usage.exercised, ["read_data"]);
    assert_eq!(usage.never_exercised, ["edit_data", "read_function"]);
    assert!(usage.last_used_time.is_some());
    let bad = report(Some(prost_types::Duration { seconds: 60, nanos: 0 })).await;
    assert_eq!(violated_fields(&assert_status(bad, tonic::Code::InvalidArgument, "INVALID_ARGUMENT")), ["window"]);

    // The admin's calls exercise api_keys_admin.
    let admin_id = credential(&app.admin_token).key_id.to_string();
    let request = pb::GetApiKeyUsageRequest { id: admin_id, window: None };
    let mut admin_usage = admin.inner.clone().get_api_key_usage(admin.req(request.clone())).await.unwrap().into_inner();
    for _ in 0..100 {
        if !admin_usage.exercised.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        admin_usage = admin.inner.clone().get_api_key_usage(admin.req(request.clone())).await.unwrap().into_inner();
    }
    assert_eq!(admin_usage.exercised, ["api_keys_admin"]);

    let cli = app.key_cli(&["usage", &id, "--output", "json"]).await.ok().json();
    let command = cli["suggested_command"].as_str().unwrap();
    assert_eq!(command, format!("apikeys key update {id} --set-permissions read_data"));
    // The suggestion, run as printed, leaves the key with what it used.
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    app.key_cli(&args).await.ok();
    assert_eq!(admin.get(&id).await.unwrap().permissions, ["read_data"]);
}

/// Consumer reports (issue 12.1 and 12.3): the uses a consumer's auth layer admits, cache hits
/// included, reach apikeys in batches, so last use and the least-privilege report see them.
#[tokio::test]
async fn a_consumer_reports_its_cache_hits_for_last_use_and_least_privilege() {
    use apikeys::auth::{remote::RemoteConfig, report::UsageReport};

    use crate::incident_service::pb::{
        CreateIncidentRequest, ListIncidentsRequest, incident_service_client::IncidentServiceClient,
    };

    let app = TestApp::spawn_with(|config| config.usage_flush_ms = 100).await;
    let admin = app.admin().await;
    // An admin key made before the report permission existed (it holds only api_keys_admin) can
    // still grant it.
    let old_admin = app.client_as(&admin.create("Old admin", &["api_keys_admin"]).await.unwrap().token).await;
    let reporter = old_admin.create("Incidents reporter", &["api_keys_usage_report"]).await.unwrap();
    let user = admin.create("Incident bot", &["create_incident", "read_all_incidents", "read_data"]).await.unwrap();
    let user_id = user.api_key.as_ref().unwrap().id.clone();

    let report = UsageReport { credential: credential(&reporter.token), interval: Duration::from_millis(100) };
    let config = RemoteConfig { usage_report: Some(report), ..RemoteConfig::default() };
    let consumer = crate::incidents::Consumer::spawn_with(app.addr, config).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", consumer.addr))
        .unwrap()
        .user_agent("incident-cli/1.0")
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut incidents = IncidentServiceClient::new(channel);
    let bearer = format!("Bearer {}", user.token);
    for i in 0..20 {
        let request = CreateIncidentRequest { title: format!("Incident {i}"), ..Default::default() };
        incidents.create_incident(authed(request, &bearer)).await.unwrap();
    }
    incidents.list_incidents(authed(ListIncidentsRequest {}, &bearer)).await.unwrap();

    // One Authenticate (the first call), 20 cache hits: all of them count.
    let usage_request = pb::GetApiKeyUsageRequest { id: user_id.clone(), window: None };
    eventually("the consumer's report reaches the least-privilege report", Duration::from_secs(10), || async {
        let usage = admin.inner.clone().get_api_key_usage(admin.req(usage_request.clone())).await.unwrap().into_inner();
        usage.exercised == ["create_incident", "read_all_incidents"]
    })
    .await;
    let usage = admin.inner.clone().get_api_key_usage(admin.req(usage_request)).await.unwrap().into_inner();
    assert_eq!(usage.never_exercised, ["read_data"]);
    let key = wait_for_use(&admin, &user_id).await;
    assert_eq!(key.last_used_address, "127.0.0.1");
    assert!(key.last_used_agent.starts_with("incident-cli/1.0"), "the client's agent: {}", key.last_used_agent);
    let reporter_log = consumer.authenticator().reporter().unwrap().log();
    assert!(reporter_log.statements() >= 1, "reports are counted");
    assert!(reporter_log.statements() < 21, "{} reports for 21 requests: not batched", reporter_log.statements());
    // The reporter's own calls count as uses of its key, exercising the report permission.
    let reporter_id = reporter.api_key.as_ref().unwrap().id.clone();
    let request = pb::GetApiKeyUsageRequest { id: reporter_id, window: None };
    eventually("the reporter's own use is noted", Duration::from_secs(10), || async {
        let usage = admin.inner.clone().get_api_key_usage(admin.req(request.clone())).await.unwrap().into_inner();
        usage.exercised == ["api_keys_usage_report"]
    })
    .await;
}

/// ReportKeyUsage takes the report permission, records only keys of the reporter's org, names
/// every malformed entry, and an interrupted report is sent with the next one.
#[tokio::test]
async fn usage_reports_are_authorized_scoped_to_the_org_and_validated() {
    use apikeys::auth::{remote::RemoteConfig, report::UsageReport};

    let app = TestApp::spawn_with(|config| config.usage_flush_ms = 100).await;
    let admin = app.admin().await;
    let reporter = app.client_as(&admin.create("Reporter", &["api_keys_usage_report"]).await.unwrap().token).await;
    let mine = admin.create("Mine", &["read_data"]).await.unwrap().api_key.unwrap();
    let other_admin = app.client_as(&app.create_org("other").await).await;
    let theirs = other_admin.create("Theirs", &["read_data"]).await.unwrap().api_key.unwrap();

    let entry = |id: &str, seconds_ago: i64| pb::KeyUsage {
        key_id: id.to_owned(),
        last_used_time: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() - seconds_ago,
            nanos: 0,
        }),
        last_used_address: "192.0.2.7".into(),
        last_used_agent: String::new(),
        exercised_permissions: vec!["read_data".into(), "not_in_the_catalog".into()],
    };
    let send = |client: &Client, usages: Vec<pb::KeyUsage>| {
        let client = client.clone();
        async move {
            let request = client.req(pb::ReportKeyUsageRequest { usages });
            client.inner.clone().report_key_usage(request).await.map(tonic::Response::into_inner)
        }
    };

    // Who may report.
    let unknown = entry(&uuid::Uuid::new_v4().to_string(), 0);
    let denied = send(&admin.clone(), vec![unknown.clone()]).await;
    assert_eq!(denied.unwrap().accepted_count, 0, "the bootstrap admin holds the whole catalog");
    let plain = app.client_as(&admin.create("Plain", &["read_data"]).await.unwrap().token).await;
    assert_status(send(&plain, vec![unknown.clone()]).await, tonic::Code::PermissionDenied, "MISSING_PERMISSIONS");
    let nobody = Client { inner: app.client().await, authorization: "Bearer apk_nope".into() };
    assert_eq!(send(&nobody, vec![unknown.clone()]).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    // What is recorded: own keys only, a future time as now, the reporter's agent when none given.
    let mut future = entry(&mine.id, -3600);
    future.last_used_agent = String::new();
    // Keys that administer apikeys (or report) are not a reporter's to describe.
    let admin_id = credential(&app.admin_token).key_id.to_string();
    let answer = send(&reporter, vec![future, entry(&theirs.id, 0), unknown, entry(&admin_id, 0)]).await.unwrap();
    assert_eq!((answer.accepted_count, answer.ignored_count), (1, 3));
    let used = wait_for_use(&admin, &mine.id).await;
    assert!(used.last_used_time.unwrap().seconds <= chrono::Utc::now().timestamp(), "a future time counts as now");
    assert_eq!(used.last_used_address, "192.0.2.7");
    assert!(used.last_used_agent.contains("tonic"), "the reporter's own agent: {}", used.last_used_agent);
    // Only the catalog's names are kept: a reporter cannot grow a key's record with made-up ones.
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let mine_id = apikeys::domain::KeyId(mine.id.parse().unwrap());
    eventually("the reported permission is written", Duration::from_secs(5), || async {
        let stored = app.store.exercised_permissions(mine_id, since).await.unwrap();
        stored.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>() == ["read_data"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other_admin.get(&theirs.id).await.unwrap().last_used_time, None, "another org's key is untouched");

    // An older report does not move the last use back.
    let answer = send(&reporter, vec![entry(&mine.id, 7200)]).await.unwrap();
    assert_eq!(answer.accepted_count, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(admin.get(&mine.id).await.unwrap().last_used_time, used.last_used_time);

    // Malformed entries, each named.
    let mut bad = entry("not-a-uuid", 0);
    bad.last_used_address = "300.1.1.1".into();
    bad.exercised_permissions = vec!["Not A Permission".into()];
    let mut timeless = entry(&mine.id, 0);
    timeless.last_used_time = None;
    let status =
        assert_status(send(&reporter, vec![bad, timeless]).await, tonic::Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        [
            "usages[0].key_id",
            "usages[0].last_used_address",
            "usages[0].exercised_permissions[0]",
            "usages[1].last_used_time"
        ]
    );
    let small = pb::KeyUsage { last_used_address: String::new(), exercised_permissions: vec![], ..entry(&mine.id, 0) };
    let too_many = vec![small; 1001];
    let status = assert_status(send(&reporter, too_many).await, tonic::Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["usages"]);

    // A consumer whose report fails keeps the uses and sends them with the next one.
    let wrong = UsageReport {
        credential: credential(&admin.create("Not a reporter", &[]).await.unwrap().token),
        interval: Duration::from_secs(3600),
    };
    let config = RemoteConfig { usage_report: Some(wrong), ..RemoteConfig::default() };
    let consumer = crate::incidents::Consumer::spawn_with(app.addr, config).await;
    let authenticator = consumer.authenticator();
    let user = admin.create("Consumer user", &["read_all_incidents"]).await.unwrap();
    consumer.list(&format!("Bearer {}", user.token)).await.unwrap();
    assert_eq!(authenticator.reporter().unwrap().log().len(), 1);
    assert_eq!(authenticator.flush_usage().await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(authenticator.reporter().unwrap().log().len(), 1, "a refused report is kept");
}
