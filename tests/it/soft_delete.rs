//! Soft delete, undelete and purge (issue 11.6): a deleted key is refused at once (here and at a
//! consumer), frees its name, stays readable and restorable with its secret until its purge time,
//! and is then removed for good.

use std::time::Duration;

use apikeys::pb::{self, api_key::State};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::{
    harness::*,
    incidents::{ALL, Consumer, bearer},
};

fn seconds_from_now(t: Option<&prost_types::Timestamp>) -> i64 {
    t.expect("a timestamp").seconds - chrono::Utc::now().timestamp()
}

fn ids(response: &pb::ListApiKeysResponse) -> Vec<&str> {
    response.api_keys.iter().map(|k| k.id.as_str()).collect()
}

#[tokio::test]
async fn a_deleted_key_is_refused_at_once_hidden_and_restorable_with_its_secret() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let created = admin.create("Reporter", ALL).await.unwrap();
    let key = created.api_key.unwrap();
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    consumer.list(&bearer(&created.token)).await.unwrap();

    let deleted = admin.delete(&key.id, &key.etag, false).await.unwrap();
    assert_eq!(deleted.state(), State::Deleted);
    assert!(seconds_from_now(deleted.delete_time.as_ref()).abs() < 60);
    let window = seconds_from_now(deleted.purge_time.as_ref());
    assert!((window - 30 * 86_400).abs() < 60, "purged 30 days after the delete by default: {window}");
    assert_ne!(deleted.etag, key.etag, "a delete is a change");

    // Refused at once here and, through the change stream, at the consumer.
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    eventually("the consumer still accepted a deleted key after a second", Duration::from_millis(1000), || async {
        matches!(consumer.list(&bearer(&created.token)).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // Readable, hidden from lists unless asked for.
    assert_eq!(admin.get(&key.id).await.unwrap(), deleted);
    let listed = admin.list(Default::default()).await.unwrap();
    assert!(!ids(&listed).contains(&key.id.as_str()), "{listed:?}");
    let with_deleted = admin.list(pb::ListApiKeysRequest { show_deleted: true, ..Default::default() }).await.unwrap();
    assert!(ids(&with_deleted).contains(&key.id.as_str()));
    let only_deleted =
        admin.list(pb::ListApiKeysRequest { state: State::Deleted.into(), ..Default::default() }).await.unwrap();
    assert_eq!(ids(&only_deleted), [key.id.as_str()]);

    // Changes other than undelete are refused; a second delete finds nothing.
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), display_name: "Zombie".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
        ..Default::default()
    };
    assert_status(admin.update(rename).await, Code::FailedPrecondition, "API_KEY_DELETED");
    assert_status(admin.regenerate(&key.id, "", false).await, Code::FailedPrecondition, "API_KEY_DELETED");
    let disable = pb::DisableApiKeyRequest { id: key.id.clone(), ..Default::default() };
    let disabled = admin.inner.clone().disable_api_key(admin.req(disable)).await;
    assert_status(disabled, Code::FailedPrecondition, "API_KEY_DELETED");
    assert_status(admin.delete(&key.id, "", false).await, Code::NotFound, "API_KEY_NOT_FOUND");

    // The name is free; undeleting while another key holds it names the holder.
    let holder = admin.create("REPORTER", &[]).await.unwrap().api_key.unwrap();
    let taken = assert_status(admin.undelete(&key.id, "").await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert!(taken.message().contains(&holder.id), "{}", taken.message());
    assert_eq!(taken.get_details_error_info().unwrap().metadata.get("holder_id"), Some(&holder.id));
    assert_eq!(admin.get(&key.id).await.unwrap(), deleted, "nothing changed");

    // Once the holder is gone: restored with its secret, everywhere.
    admin.delete(&holder.id, "", false).await.unwrap();
    assert_status(admin.undelete(&key.id, "\"999\"").await, Code::Aborted, "ETAG_MISMATCH");
    let restored = admin.undelete(&key.id, &deleted.etag).await.unwrap();
    assert_eq!(restored.state(), State::Active);
    assert_eq!((restored.delete_time, restored.purge_time), (None, None));
    assert_eq!((restored.display_name.as_str(), &restored.permissions), ("Reporter", &key.permissions));
    authenticate_token(&mut client, &created.token, &[]).await.expect("the same secret works again");
    consumer.list(&bearer(&created.token)).await.expect("and at the consumer");
    assert_status(admin.undelete(&key.id, "").await, Code::FailedPrecondition, "API_KEY_NOT_DELETED");

    let events = app.store.audit_events(credential(&created.token).key_id).await.unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["CREATE", "DELETE", "UNDELETE"], "refused changes leave no event");
}

#[tokio::test]
async fn a_key_keeps_its_state_through_delete_and_undelete() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Paused", ALL).await.unwrap();
    let key = created.api_key.unwrap();
    let disable = pb::DisableApiKeyRequest { id: key.id.clone(), ..Default::default() };
    admin.inner.clone().disable_api_key(admin.req(disable)).await.unwrap();
    admin.delete(&key.id, "", false).await.unwrap();
    let restored = admin.undelete(&key.id, "").await.unwrap();
    assert_eq!(restored.state(), State::Disabled, "undelete restores, it does not enable");
    let mut client = app.client().await;
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");

    // A weaker admin can neither delete nor restore a stronger key.
    let weak = admin.create("Weak admin", &["api_keys_admin"]).await.unwrap();
    let weak = app.client_as(&weak.token).await;
    assert_status(weak.delete(&key.id, "", false).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    admin.delete(&key.id, "", false).await.unwrap();
    assert_status(weak.undelete(&key.id, "").await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    // Nor can another org see it.
    let other = app.client_as(&app.create_org("acme").await).await;
    assert_status(other.undelete(&key.id, "").await, Code::NotFound, "API_KEY_NOT_FOUND");
}

#[tokio::test]
async fn deleted_keys_are_purged_for_good_after_the_undelete_window() {
    let app = TestApp::spawn_with(|config| {
        config.undelete_window_secs = 1;
        config.purge_interval_ms = 100;
    })
    .await;
    let admin = app.admin().await;
    let kept = admin.create("Kept", &[]).await.unwrap().api_key.unwrap();
    let created = admin.create("Doomed", &["read_data"]).await.unwrap();
    let key = created.api_key.unwrap();
    let deleted = admin.delete(&key.id, "", false).await.unwrap();
    assert!(seconds_from_now(deleted.purge_time.as_ref()) <= 1);

    eventually("not purged 5 s after a 1 s window", Duration::from_millis(5000), || async {
        admin.get(&key.id).await.is_err()
    })
    .await;
    assert_status(admin.get(&key.id).await, Code::NotFound, "API_KEY_NOT_FOUND");
    assert_status(admin.undelete(&key.id, "").await, Code::NotFound, "API_KEY_NOT_FOUND");
    let listed = admin.list(pb::ListApiKeysRequest { show_deleted: true, ..Default::default() }).await.unwrap();
    assert!(!ids(&listed).contains(&key.id.as_str()));
    assert_eq!(admin.get(&kept.id).await.unwrap(), kept, "live keys are never purged");
    let mut client = app.client().await;
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");

    // The trail outlives the key: the purge is its last event, by the system.
    let events = app.store.audit_events(credential(&created.token).key_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.action.as_str(), last.actor_type.as_str(), last.actor_id.as_str()), ("PURGE", "SYSTEM", "purge"));
    assert_eq!(events.len(), 3, "CREATE, DELETE, PURGE once: {events:?}");
}

/// Deleted keys may share a name with each other and with a live key; pages over all of them still
/// list each key exactly once.
#[tokio::test]
async fn pages_with_deleted_keys_of_one_name_list_each_key_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let mut expected = vec![];
    for _ in 0..3 {
        let key = admin.create("Rotating", &[]).await.unwrap().api_key.unwrap();
        admin.delete(&key.id, "", false).await.unwrap();
        expected.push(key.id);
    }
    expected.push(admin.create("rotating", &[]).await.unwrap().api_key.unwrap().id);
    expected.sort();

    let mut seen = vec![];
    let mut request = pb::ListApiKeysRequest {
        page_size: 1,
        name_contains: "rotating".into(),
        show_deleted: true,
        ..Default::default()
    };
    loop {
        let page = admin.list(request.clone()).await.unwrap();
        seen.extend(page.api_keys.iter().map(|k| k.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        // A token is bound to its filters, show_deleted included.
        let without =
            pb::ListApiKeysRequest { show_deleted: false, page_token: page.next_page_token.clone(), ..request.clone() };
        assert_status(admin.list(without).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        request.page_token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen, expected);
}
