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
