//! The audit trail (issue 12, ListAuditEvents): every change of a key, newest first, filtered and
//! paginated, limited to the caller's organization.

use apikeys::pb;
use tonic::Code;

use crate::harness::*;

async fn events(
    admin: &Client,
    request: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, tonic::Status> {
    Ok(admin.inner.clone().list_audit_events(admin.req(request)).await?.into_inner())
}

#[tokio::test]
async fn the_audit_trail_lists_every_change_newest_first_filtered_and_paginated() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let a = admin.create("Audited A", &["read_data"]).await.unwrap().api_key.unwrap();
    let b = admin.create("Audited B", &[]).await.unwrap().api_key.unwrap();
    admin.regenerate(&a.id, "", false).await.unwrap();
    let request = pb::DisableApiKeyRequest { id: a.id.clone(), ..Default::default() };
    admin.inner.clone().disable_api_key(admin.req(request)).await.unwrap();
    admin.delete(&b.id, "", false).await.unwrap();

    // Everything of the org, newest first: the bootstrap, two creates, then the three changes.
    let all = events(&admin, pb::ListAuditEventsRequest::default()).await.unwrap();
    let actions: Vec<&str> = all.audit_events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["DELETE", "DISABLE", "REGENERATE_SECRET", "CREATE", "CREATE", "BOOTSTRAP"]);
    assert!(all.next_page_token.is_empty());
    let regenerate = &all.audit_events[2];
    assert_eq!(
        (regenerate.key_id.as_str(), regenerate.changed_fields.as_slice()),
        (a.id.as_str(), &["secret".to_owned()][..])
    );
    let admin_id = credential(&app.admin_token).key_id.to_string();
    assert_eq!(regenerate.actor.as_ref().unwrap().id, admin_id);

    // Filters: one key, one action, one actor, a time range.
    let of_a = events(&admin, pb::ListAuditEventsRequest { key_id: a.id.clone(), ..Default::default() }).await.unwrap();
    let actions: Vec<&str> = of_a.audit_events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["DISABLE", "REGENERATE_SECRET", "CREATE"]);
    let creates =
        events(&admin, pb::ListAuditEventsRequest { action: "create".into(), ..Default::default() }).await.unwrap();
    assert_eq!(creates.audit_events.len(), 2);
    let by_bootstrap = pb::ListAuditEventsRequest { actor_id: "bootstrap".into(), ..Default::default() };
    assert_eq!(events(&admin, by_bootstrap).await.unwrap().audit_events.len(), 1);
    let since = all.audit_events[2].time;
    let recent = events(&admin, pb::ListAuditEventsRequest { start_time: since, ..Default::default() }).await.unwrap();
    assert_eq!(recent.audit_events.len(), 3, "at or after the regenerate");

    // Pages of two give the same events in the same order.
    let (mut paged, mut token) = (Vec::new(), String::new());
    loop {
        let page = events(&admin, pb::ListAuditEventsRequest { page_size: 2, page_token: token, ..Default::default() })
            .await
            .unwrap();
        assert!(page.audit_events.len() <= 2);
        paged.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, all.audit_events);

    // Bad requests name their field; a token only works with its filters.
    let first = events(&admin, pb::ListAuditEventsRequest { page_size: 1, ..Default::default() }).await.unwrap();
    let other =
        pb::ListAuditEventsRequest { page_token: first.next_page_token, action: "DELETE".into(), ..Default::default() };
    assert_eq!(
        violated_fields(&assert_status(events(&admin, other).await, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["page_token"]
    );
    let bad = pb::ListAuditEventsRequest {
        action: "EXPLODE".into(),
        key_id: "nope".into(),
        page_size: -1,
        ..Default::default()
    };
    let mut fields =
        violated_fields(&assert_status(events(&admin, bad).await, Code::InvalidArgument, "INVALID_ARGUMENT"));
    fields.sort();
    assert_eq!(fields, ["action", "key_id", "page_size"]);

    // Admins only, and only their own organization's events.
    let reader = admin.create("Reader", &["read_data"]).await.unwrap().token;
    let denied = events(&app.client_as(&reader).await, pb::ListAuditEventsRequest::default()).await;
    assert_status(denied, Code::PermissionDenied, "MISSING_PERMISSIONS");
    let other_org = app.client_as(&app.create_org("elsewhere").await).await;
    let theirs = events(&other_org, pb::ListAuditEventsRequest::default()).await.unwrap();
    assert_eq!(theirs.audit_events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["BOOTSTRAP"]);
}

/// Each event says what changed from what to what, which request made it and from where; never a
/// secret.
#[tokio::test]
async fn events_carry_old_and_new_values_the_request_id_and_the_source_address() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Valued", &["read_data"]).await.unwrap();
    let key = created.api_key.unwrap();
    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: key.id.clone(),
            description: "nightly export".into(),
            permissions: vec!["read_data".into(), "read_function".into()],
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut request = admin.req(update);
    request.metadata_mut().insert("x-request-id", "deploy-4711".parse().unwrap());
    admin.inner.clone().update_api_key(request).await.unwrap();
    // A request ID that could forge log lines is replaced by one the server makes.
    let disable = pb::DisableApiKeyRequest { id: key.id.clone(), ..Default::default() };
    let mut request = admin.req(disable);
    request.metadata_mut().insert("x-request-id", "a b".parse().unwrap());
    admin.inner.clone().disable_api_key(request).await.unwrap();

    let filter = pb::ListAuditEventsRequest { key_id: key.id.clone(), ..Default::default() };
    let listed = events(&admin, filter).await.unwrap().audit_events;
    let [disabled, updated, created_event] = &listed[..] else { panic!("{listed:?}") };
    let change = |event: &pb::AuditEvent, field: &str| {
        let c = event.changes.iter().find(|c| c.field == field).unwrap_or_else(|| panic!("{field}: {event:?}"));
        (c.old_value.clone(), c.new_value.clone())
    };
    assert_eq!(change(updated, "description"), (r#""""#.into(), r#""nightly export""#.into()));
    assert_eq!(change(updated, "permissions"), (r#"["read_data"]"#.into(), r#"["read_data","read_function"]"#.into()));
    assert_eq!(change(updated, "allowed_cidrs"), ("[]".into(), r#"["10.0.0.0/8"]"#.into()));
    assert_eq!(updated.changes.len(), 3, "unchanged fields are not listed: {updated:?}");
    assert_eq!(updated.request_id, "deploy-4711");
    assert_eq!(updated.source_address, "127.0.0.1");
    assert_eq!(change(disabled, "state"), (r#""ACTIVE""#.into(), r#""DISABLED""#.into()));
    assert!(uuid::Uuid::parse_str(&disabled.request_id).is_ok(), "{}", disabled.request_id);
    assert_eq!(change(created_event, "display_name"), ("null".into(), r#""Valued""#.into()));

    // Nothing in the trail is the secret or its hash.
    let secret = credential(&created.token).secret.expose_text();
    let text = format!("{listed:?}");
    assert!(!text.contains(&secret) && !text.contains("$argon2"), "{text}");
}

async fn next_events(
    stream: &mut tonic::Streaming<pb::WatchAuditEventsResponse>,
    want: usize,
) -> (Vec<pb::AuditEvent>, String) {
    let mut events = Vec::new();
    let mut cursor = String::new();
    while events.len() < want {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
            .await
            .expect("events within 5 s")
            .unwrap()
            .expect("the stream goes on");
        events.extend(message.audit_events);
        cursor = message.cursor;
    }
    (events, cursor)
}

/// WatchAuditEvents streams the org's events as they are written, each once, and resumes from a
/// cursor; another org's events never appear.
#[tokio::test]
async fn the_audit_trail_streams_as_it_is_written_and_resumes_from_a_cursor() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let watch = |request: pb::WatchAuditEventsRequest| {
        let admin = admin.clone();
        async move { admin.inner.clone().watch_audit_events(admin.req(request)).await.map(tonic::Response::into_inner) }
    };
    let mut stream = watch(Default::default()).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(1), stream.message()).await;
    let first = first.expect("the first message comes at once").unwrap().unwrap();
    assert!(first.audit_events.is_empty() && !first.cursor.is_empty(), "{first:?}");

    let key = admin.create("Streamed", &[]).await.unwrap().api_key.unwrap();
    let other_org = app.client_as(&app.create_org("acme").await).await;
    other_org.create("Not yours", &[]).await.unwrap();
    admin.delete(&key.id, "", false).await.unwrap();
    let (events, cursor) = next_events(&mut stream, 2).await;
    let actions: Vec<(&str, &str)> = events.iter().map(|e| (e.action.as_str(), e.key_id.as_str())).collect();
    assert_eq!(actions, [("CREATE", key.id.as_str()), ("DELETE", key.id.as_str())], "oldest first, ours only");
    drop(stream);

    // Resumed from the cursor: what came after, and possibly (at least once) the last seconds again.
    admin.undelete(&key.id, "").await.unwrap();
    let mut resumed = watch(pb::WatchAuditEventsRequest { cursor, ..Default::default() }).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &pb::AuditEvent| e.action == "UNDELETE") {
        let (events, _) = next_events(&mut resumed, 1).await;
        seen.extend(events);
    }
    let mut ids: Vec<&str> = seen.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), seen.len(), "within one stream each event comes once");

    // From a start time: the whole trail, the bootstrap first.
    let since = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 3600, nanos: 0 };
    let mut all = watch(pb::WatchAuditEventsRequest { start_time: Some(since), ..Default::default() }).await.unwrap();
    let (events, _) = next_events(&mut all, 4).await;
    assert_eq!(events[0].action, "BOOTSTRAP");

    let bad = watch(pb::WatchAuditEventsRequest { cursor: "nonsense".into(), ..Default::default() }).await;
    assert_eq!(violated_fields(&assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT")), ["cursor"]);
}

/// Events older than the retention are removed by the periodic sweep; newer ones stay.
#[tokio::test]
async fn audit_events_past_their_retention_are_removed() {
    use apikeys::store::entities::audit_event;
    use sea_orm::{ActiveValue::Set, EntityTrait as _};
    let app = TestApp::spawn_with(|config| {
        config.audit_retention_days = 30;
        config.purge_interval_ms = 100;
    })
    .await;
    let admin = app.admin().await;
    let key = admin.create("Long-lived", &[]).await.unwrap().api_key.unwrap();
    let key_id: uuid::Uuid = key.id.parse().unwrap();
    let old = audit_event::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        org_id: Set(key.org_id.parse().unwrap()),
        actor_type: Set("SYSTEM".into()),
        actor_id: Set("test".into()),
        actor_name: Set("test".into()),
        action: Set("UPDATE".into()),
        key_id: Set(key_id),
        changed_fields: Set("[]".into()),
        time: Set(chrono::Utc::now() - chrono::Duration::days(31)),
        changes: Set("[]".into()),
        request_id: Set(String::new()),
        source_address: Set(String::new()),
    };
    audit_event::Entity::insert(old).exec(app.store.connection()).await.unwrap();
    eventually("the 31-day-old event is still there", std::time::Duration::from_millis(5000), || async {
        app.store.audit_events(key_id).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(app.store.audit_events(key_id).await.unwrap()[0].action, "CREATE", "the recent one stays");
}

#[tokio::test]
async fn the_cli_lists_and_follows_the_audit_trail() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let key = admin.create("Audited by CLI", &["read_data"]).await.unwrap().api_key.unwrap();
    let (server, token_file) = (app.url(), app.admin_token_file());
    let listed = apikeys(&[
        "audit",
        "--server",
        &server,
        "--token-file",
        &token_file,
        "--output",
        "json",
        "list",
        "--key",
        &key.id,
    ])
    .await
    .ok()
    .json();
    let events = listed["audit_events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{listed}");
    assert_eq!(events[0]["action"], "CREATE");
    assert_eq!(events[0]["changes"][0]["new"], "Audited by CLI", "{listed}");

    // `watch` prints one JSON object per event as it is written.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_apikeys"))
        .args(["audit", "--server", &server, "--token-file", &token_file, "--output", "json", "watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    // The stream is open once the server has counted it; give it a moment, then change the key.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    admin.delete(&key.id, "", false).await.unwrap();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("an event line within 10 s")
        .unwrap()
        .expect("a line");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!((event["action"].as_str(), event["key_id"].as_str()), (Some("DELETE"), Some(key.id.as_str())));
    assert!(event["cursor"].as_str().is_some_and(|c| !c.is_empty()), "{event}");
    watch.kill().await.unwrap();
}

/// Keys about to expire get a warning on the audit trail when they enter their last days and
/// their last day, once each per expire time (a key already in its last day gets only the last).
#[tokio::test]
async fn keys_about_to_expire_are_announced_once_on_the_audit_trail() {
    let app = TestApp::spawn_with(|config| config.purge_interval_ms = 100).await;
    let admin = app.admin().await;
    let expiring = |name: &'static str, hours: i64| {
        let admin = admin.clone();
        async move {
            let at = chrono::Utc::now() + chrono::Duration::hours(hours);
            let request = pb::CreateApiKeyRequest {
                display_name: name.into(),
                expire_time: Some(prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 }),
                ..Default::default()
            };
            admin.create_full(request).await.unwrap().api_key.unwrap()
        }
    };
    let days = expiring("Three days", 72).await;
    let hours = expiring("Ten hours", 10).await;
    let month = expiring("A month", 30 * 24).await;
    let warnings = |id: String| {
        let admin = admin.clone();
        async move {
            let filter = pb::ListAuditEventsRequest { key_id: id, ..Default::default() };
            let events = events(&admin, filter).await.unwrap().audit_events;
            events.into_iter().filter(|e| e.action.starts_with("EXPIRY")).collect::<Vec<_>>()
        }
    };
    eventually("no expiry warnings after 5 s", std::time::Duration::from_millis(5000), || async {
        !warnings(days.id.clone()).await.is_empty() && !warnings(hours.id.clone()).await.is_empty()
    })
    .await;
    // Several more sweeps: still once each.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let first = warnings(days.id.clone()).await;
    assert_eq!(first.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["EXPIRY_WARNING"]);
    assert_eq!(first[0].actor.as_ref().unwrap().id, "expiry");
    assert_eq!(first[0].changes[0].field, "expire_time");
    let last = warnings(hours.id.clone()).await;
    assert_eq!(last.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["EXPIRY_LAST_WARNING"]);
    assert!(warnings(month.id.clone()).await.is_empty());

    // A new expire time gets its own warnings: moved into its last day, the three-day key is
    // warned again.
    let sooner = chrono::Utc::now() + chrono::Duration::hours(20);
    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: days.id.clone(),
            expire_time: Some(prost_types::Timestamp { seconds: sooner.timestamp(), nanos: 0 }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["expire_time".into()] }),
        ..Default::default()
    };
    admin.update(update).await.unwrap();
    eventually("no last warning for the new expire time", std::time::Duration::from_millis(5000), || async {
        warnings(days.id.clone()).await.len() == 2
    })
    .await;
    assert_eq!(warnings(days.id.clone()).await[0].action, "EXPIRY_LAST_WARNING", "newest first");
}

/// A stream is authorised when it opens and checked again every few seconds: deleting the
/// watching admin's key ends it.
#[tokio::test]
async fn an_audit_stream_ends_when_its_admin_key_is_revoked() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let watcher = admin.create("SIEM exporter", &["api_keys_admin"]).await.unwrap();
    let siem = app.client_as(&watcher.token).await;
    let mut stream = siem
        .inner
        .clone()
        .watch_audit_events(siem.req(pb::WatchAuditEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("the first message");
    admin.delete(&watcher.api_key.unwrap().id, "", false).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended within 10 s");
    assert_status(ended, Code::Unauthenticated, "UNAUTHENTICATED");
}
