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
    let older = chrono::Utc::now() - chrono::Duration::hours(1);
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
