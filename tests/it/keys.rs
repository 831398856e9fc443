//! Admin RPCs: every success path and every error code, isolation, escalation, app-managed keys,
//! concurrency and pagination.

use std::collections::BTreeSet;

use apikeys::pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::harness::*;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

#[tokio::test]
async fn create_get_update_regenerate_delete_round_trip() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;

    let created = admin
        .create_full(pb::CreateApiKeyRequest {
            display_name: "  CI Deployer ".into(),
            description: "deploys from CI".into(),
            permissions: vec!["read_playbook".into(), "read_data".into(), "read_data".into()],
            app_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = created.api_key.clone().unwrap();
    assert_eq!(key.display_name, "CI Deployer", "trimmed");
    assert_eq!(key.permissions, ["read_data", "read_playbook"], "sorted, deduplicated");
    assert!(uuid::Uuid::parse_str(&key.id).is_ok());
    assert_eq!(created.secret.len(), 43);
    assert!(created.token.starts_with("apk_"));
    let creator = key.created_by.clone().unwrap();
    assert_eq!(creator.r#type(), pb::ActorType::ApiKey);
    assert_eq!(creator.id, credential(&app.admin_token).key_id.to_string());
    assert_eq!(key.updated_by, key.created_by);
    assert!(key.create_time.is_some() && !key.etag.is_empty());

    let fetched = admin.get(&key.id).await.unwrap();
    assert_eq!(fetched, key);

    let updated = admin
        .update(pb::UpdateApiKeyRequest {
            api_key: Some(pb::ApiKey {
                id: key.id.clone(),
                description: "new text".into(),
                permissions: vec!["create_incident".into()],
                display_name: "ignored: not in mask".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description", "permissions"]),
            etag: key.etag.clone(),
            acknowledge_app_impact: false,
        })
        .await
        .unwrap();
    assert_eq!(updated.display_name, "CI Deployer");
    assert_eq!(updated.description, "new text");
    assert_eq!(updated.permissions, ["create_incident"]);
    assert_ne!(updated.etag, key.etag);
    assert_eq!(updated.id, key.id);

    let regenerated = admin.regenerate(&key.id, &updated.etag, false).await.unwrap();
    let regenerated_key = regenerated.api_key.unwrap();
    assert_eq!(regenerated_key.id, key.id, "same ID");
    assert_ne!(regenerated.token, created.token);
    assert_ne!(regenerated_key.etag, updated.etag);

    let deleted = admin.delete(&key.id, &regenerated_key.etag, false).await.unwrap();
    assert_eq!(deleted.state(), pb::api_key::State::Deleted);
    assert_eq!(admin.get(&key.id).await.unwrap(), deleted, "a deleted key can still be read");

    // Every mutation left an audit event, oldest first, without secrets.
    let events = app.store.audit_events(credential(&created.token).key_id).await.unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["CREATE", "UPDATE", "REGENERATE_SECRET", "DELETE"]);
    assert_eq!(events[1].changed_fields, r#"["description","permissions"]"#);
    for event in &events {
        assert_eq!(event.actor_type, "API_KEY");
        assert!(!format!("{event:?}").contains(&created.secret));
    }
}

#[tokio::test]
async fn display_names_are_unique_per_org_ignoring_case_and_reusable_after_delete() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let first = admin.create("Reporter", &[]).await.unwrap().api_key.unwrap();
    let status = assert_status(admin.create("reporter ", &[]).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert!(status.message().contains("reporter"));

    // Renaming onto a taken name is ALREADY_EXISTS too, and changes nothing.
    let other = admin.create("Other", &[]).await.unwrap().api_key.unwrap();
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: other.id.clone(), display_name: "REPORTER".into(), ..Default::default() }),
        update_mask: mask(&["display_name"]),
        ..Default::default()
    };
    assert_status(admin.update(rename).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert_eq!(admin.get(&other.id).await.unwrap(), other);

    // Another org may use the same name.
    let other_org = app.client_as(&app.create_org("acme").await).await;
    other_org.create("Reporter", &[]).await.unwrap();

    admin.delete(&first.id, "", false).await.unwrap();
    admin.create("REPORTER", &[]).await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_creates_of_one_name_yield_exactly_one_key() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let attempts = (0..50).map(|_| {
        let admin = admin.clone();
        tokio::spawn(async move { admin.create("Racer", &["read_data"]).await })
    });
    let results = futures::future::join_all(attempts).await;
    let mut won = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
    let listed =
        admin.list(pb::ListApiKeysRequest { name_contains: "racer".into(), ..Default::default() }).await.unwrap();
    assert_eq!(listed.api_keys.len(), 1);
}

#[tokio::test]
async fn invalid_input_names_the_fields_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let status = assert_status(
        admin
            .create_full(pb::CreateApiKeyRequest {
                display_name: "bad\u{0}name".into(),
                description: "x".repeat(1001),
                permissions: vec!["read_data".into(), "fly_rockets".into()],
                app_id: "a".repeat(101),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["display_name", "description", "permissions[1]", "app_id"]);

    for (name, expected) in [("", "display_name"), ("   ", "display_name"), (&"n".repeat(101)[..], "display_name")] {
        let status = assert_status(admin.create(name, &[]).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), [expected]);
    }
    assert!(admin.create(&"é".repeat(100), &[]).await.is_ok(), "100 characters is fine");

    for id in ["", "not-a-uuid", "'; DROP TABLE api_keys; --"] {
        let status = assert_status(admin.get(id).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), ["id"]);
    }
    let status = assert_status(
        admin
            .update(pb::UpdateApiKeyRequest {
                api_key: Some(pb::ApiKey { id: uuid::Uuid::new_v4().to_string(), ..Default::default() }),
                update_mask: mask(&["secret_hash"]),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["update_mask"]);
    assert_status(admin.update(pb::UpdateApiKeyRequest::default()).await, Code::InvalidArgument, "INVALID_ARGUMENT");

    let listed = admin.list(pb::ListApiKeysRequest::default()).await.unwrap();
    assert_eq!(listed.api_keys.len(), 2, "only the administrator and the 100-character key exist");
}

#[tokio::test]
async fn admin_rpcs_need_valid_credentials_with_the_admin_permission() {
    let app = TestApp::spawn().await;
    let mut anonymous = app.client().await;
    assert_status(
        anonymous.get_api_key(pb::GetApiKeyRequest { id: uuid::Uuid::new_v4().to_string() }).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let admin = app.admin().await;
    let reader = admin.create("Reader", &["read_data"]).await.unwrap();
    let as_reader = app.client_as(&reader.token).await;
    let status = assert_status(as_reader.create("X", &[]).await, Code::PermissionDenied, "MISSING_PERMISSIONS");
    assert!(status.message().contains("api_keys_admin"));
    // Permission is checked before existence: a non-admin learns nothing about IDs.
    assert_status(
        as_reader.get(&uuid::Uuid::new_v4().to_string()).await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );

    let mut wrong = credential(&reader.token);
    wrong.secret = apikeys::auth::Secret::generate().unwrap();
    let as_wrong = app.client_as(&wrong.token()).await;
    assert_status(as_wrong.list(Default::default()).await, Code::Unauthenticated, "UNAUTHENTICATED");

    // Basic credentials work too.
    let basic = Client { inner: app.client().await, authorization: credential(&app.admin_token).basic() };
    basic.list(Default::default()).await.unwrap();
    // ListPermissions is public.
    let catalog = anonymous.list_permissions(pb::ListPermissionsRequest {}).await.unwrap().into_inner();
    let names: BTreeSet<_> = catalog.permissions.iter().map(|p| p.name.as_str()).collect();
    assert!(names.is_superset(&BTreeSet::from(["read_data", "create_incident", "api_keys_admin"])));
    assert!(catalog.permissions.iter().all(|p| !p.category.is_empty() && !p.description.is_empty()));
}

#[tokio::test]
async fn admins_can_grant_only_permissions_they_hold() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let limited = admin.create("Limited admin", &["api_keys_admin", "read_data"]).await.unwrap();
    let as_limited = app.client_as(&limited.token).await;

    as_limited.create("Fine", &["read_data"]).await.unwrap();
    let status = assert_status(
        as_limited.create("Greedy", &["read_data", "edit_data"]).await,
        Code::PermissionDenied,
        "PERMISSION_ESCALATION",
    );
    assert!(status.message().contains("edit_data"));

    // Updating another key: adding an unheld permission is refused; keeping one it has is not.
    let rich = admin.create("Rich", &["edit_data"]).await.unwrap().api_key.unwrap();
    let add = |perms: Vec<&str>| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: rich.id.clone(),
            permissions: perms.into_iter().map(Into::into).collect(),
            ..Default::default()
        }),
        update_mask: mask(&["permissions"]),
        ..Default::default()
    };
    assert_status(
        as_limited.update(add(vec!["edit_data", "edit_all_incidents_fields"])).await,
        Code::PermissionDenied,
        "PERMISSION_ESCALATION",
    );
    // Changing the permissions of a key holding edit_data needs edit_data too.
    let status = assert_status(
        as_limited.update(add(vec!["edit_data", "read_data"])).await,
        Code::PermissionDenied,
        "PERMISSION_ESCALATION",
    );
    assert!(status.message().contains("edit_data"));

    // A weaker admin can neither take over nor remove a stronger key, such as the first administrator.
    let root_id = credential(&app.admin_token).key_id.to_string();
    assert_status(as_limited.regenerate(&root_id, "", false).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    assert_status(as_limited.delete(&root_id, "", false).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    let strip = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: root_id.clone(), permissions: vec!["read_data".into()], ..Default::default() }),
        update_mask: mask(&["permissions"]),
        ..Default::default()
    };
    assert_status(as_limited.update(strip).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    let mut anonymous = app.client().await;
    authenticate_token(&mut anonymous, &app.admin_token, &["edit_data"]).await.unwrap();

    // Keys it outranks it manages freely.
    let weak = admin.create("Weak", &["read_data"]).await.unwrap().api_key.unwrap();
    as_limited.regenerate(&weak.id, "", false).await.unwrap();
    as_limited.delete(&weak.id, "", false).await.unwrap();
}

#[tokio::test]
async fn keys_of_other_orgs_are_not_found() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ours = admin.create("Ours", &[]).await.unwrap().api_key.unwrap();
    let theirs = app.client_as(&app.create_org("other").await).await;

    assert_status(theirs.get(&ours.id).await, Code::NotFound, "API_KEY_NOT_FOUND");
    assert_status(theirs.delete(&ours.id, "", false).await, Code::NotFound, "API_KEY_NOT_FOUND");
    assert_status(theirs.regenerate(&ours.id, "", false).await, Code::NotFound, "API_KEY_NOT_FOUND");
    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: ours.id.clone(), description: "pwned".into(), ..Default::default() }),
        update_mask: mask(&["description"]),
        ..Default::default()
    };
    assert_status(theirs.update(update).await, Code::NotFound, "API_KEY_NOT_FOUND");
    let listed = theirs.list(Default::default()).await.unwrap();
    assert!(listed.api_keys.iter().all(|k| k.id != ours.id));
    assert_eq!(admin.get(&ours.id).await.unwrap(), ours, "untouched");
}

#[tokio::test]
async fn stale_etags_are_aborted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let key = admin.create("Versioned", &[]).await.unwrap().api_key.unwrap();
    let change = |etag: &str| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), description: "v2".into(), ..Default::default() }),
        update_mask: mask(&["description"]),
        etag: etag.to_owned(),
        ..Default::default()
    };
    let v2 = admin.update(change(&key.etag)).await.unwrap();
    assert_status(admin.update(change(&key.etag)).await, Code::Aborted, "ETAG_MISMATCH");
    assert_status(admin.regenerate(&key.id, &key.etag, false).await, Code::Aborted, "ETAG_MISMATCH");
    assert_status(admin.delete(&key.id, &key.etag, false).await, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(admin.get(&key.id).await.unwrap(), v2, "nothing changed");
    admin.delete(&key.id, &v2.etag, false).await.unwrap();
}

#[tokio::test]
async fn app_managed_keys_need_acknowledgement_for_risky_changes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create_for_app("Slack app", &["read_data"], "slack").await.unwrap();
    let key = created.api_key.unwrap();
    assert_eq!(key.app_id, "slack");

    let perms = |ack: bool| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), permissions: vec!["edit_data".into()], ..Default::default() }),
        update_mask: mask(&["permissions"]),
        acknowledge_app_impact: ack,
        ..Default::default()
    };
    let status = assert_status(admin.update(perms(false)).await, Code::FailedPrecondition, "APP_MANAGED_KEY");
    assert!(status.message().contains("slack") && status.message().contains("acknowledge_app_impact"));
    assert_status(admin.regenerate(&key.id, "", false).await, Code::FailedPrecondition, "APP_MANAGED_KEY");
    assert_status(admin.delete(&key.id, "", false).await, Code::FailedPrecondition, "APP_MANAGED_KEY");

    // Renaming does not touch what the app relies on.
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), description: "installed".into(), ..Default::default() }),
        update_mask: mask(&["description"]),
        ..Default::default()
    };
    admin.update(rename).await.unwrap();

    assert_eq!(admin.update(perms(true)).await.unwrap().permissions, ["edit_data"]);
    admin.regenerate(&key.id, "", true).await.unwrap();
    admin.delete(&key.id, "", true).await.unwrap();
}

#[tokio::test]
async fn list_pages_in_name_order_with_filters() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let names = ["delta", "Alpha", "charlie", "Bravo", "echo", "foxtrot_1", "foxtrot%2"];
    for (i, name) in names.iter().enumerate() {
        let perms: &[&str] = if i % 2 == 0 { &["read_data"] } else { &[] };
        let request = pb::CreateApiKeyRequest {
            display_name: (*name).to_owned(),
            permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
            app_id: if i == 4 { "jira".into() } else { String::new() },
            ..Default::default()
        };
        admin.create_full(request).await.unwrap();
    }
    // Page through everything three at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page =
            admin.list(pb::ListApiKeysRequest { page_size: 3, page_token: token, ..Default::default() }).await.unwrap();
        assert!(page.api_keys.len() <= 3);
        seen.extend(page.api_keys.into_iter().map(|k| k.display_name));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["Administrator", "Alpha", "Bravo", "charlie", "delta", "echo", "foxtrot%2", "foxtrot_1"]);

    let names_of = |r: pb::ListApiKeysResponse| r.api_keys.into_iter().map(|k| k.display_name).collect::<Vec<_>>();
    let contains = |text: &str| pb::ListApiKeysRequest { name_contains: text.into(), ..Default::default() };
    assert_eq!(names_of(admin.list(contains("RAV")).await.unwrap()), ["Bravo"]);
    assert_eq!(names_of(admin.list(contains("_")).await.unwrap()), ["foxtrot_1"], "LIKE wildcards are literal");
    assert_eq!(names_of(admin.list(contains("%")).await.unwrap()), ["foxtrot%2"]);
    let by_app = pb::ListApiKeysRequest { app_id: "jira".into(), ..Default::default() };
    assert_eq!(names_of(admin.list(by_app).await.unwrap()), ["echo"]);
    let by_perm = pb::ListApiKeysRequest { permission: "read_data".into(), ..Default::default() };
    assert_eq!(
        names_of(admin.list(by_perm).await.unwrap()),
        ["Administrator", "charlie", "delta", "echo", "foxtrot%2"]
    );

    // Filtered paging, and a token replayed with other filters.
    let first = admin
        .list(pb::ListApiKeysRequest { page_size: 2, permission: "read_data".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(names_of(first.clone()), ["Administrator", "charlie"]);
    let second = admin
        .list(pb::ListApiKeysRequest {
            page_size: 2,
            permission: "read_data".into(),
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(names_of(second), ["delta", "echo"]);
    let status = assert_status(
        admin
            .list(pb::ListApiKeysRequest { page_size: 2, page_token: first.next_page_token, ..Default::default() })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["page_token"]);
    for bad in [
        pb::ListApiKeysRequest { page_size: -1, ..Default::default() },
        pb::ListApiKeysRequest { page_token: "garbage!".into(), ..Default::default() },
        pb::ListApiKeysRequest { permission: "nope".into(), ..Default::default() },
    ] {
        assert_status(admin.list(bad).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    // Page sizes above the maximum are clamped, not refused.
    let all = admin.list(pb::ListApiKeysRequest { page_size: 1_000_000, ..Default::default() }).await.unwrap();
    assert_eq!(all.api_keys.len(), 8);
    assert!(all.next_page_token.is_empty());
}

#[tokio::test]
async fn database_outage_is_unavailable_not_internal() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let key = admin.create("Before outage", &[]).await.unwrap().api_key.unwrap();
    app.store.connection().clone().close().await.unwrap();
    // The admin credential is cached, so the request reaches the handler and its database read.
    assert_status(admin.get(&key.id).await, Code::Unavailable, "BACKEND_UNAVAILABLE");
    let mut anonymous = app.client().await;
    let unknown =
        apikeys::auth::Credential { key_id: uuid::Uuid::new_v4(), secret: apikeys::auth::Secret::generate().unwrap() };
    assert_status(
        authenticate_token(&mut anonymous, &unknown.token(), &[]).await,
        Code::Unavailable,
        "BACKEND_UNAVAILABLE",
    );
}

/// Issue 7.9: renaming or re-describing is a mutation like any other; a weaker admin cannot do it
/// to a stronger key (here, the first administrator).
#[tokio::test]
async fn a_weaker_admin_cannot_rename_or_redescribe_a_stronger_key() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let limited = admin.create("Limited admin", &["api_keys_admin"]).await.unwrap();
    let as_limited = app.client_as(&limited.token).await;
    let root_id = credential(&app.admin_token).key_id.to_string();
    let before = admin.get(&root_id).await.unwrap();
    for (field, api_key) in [
        (
            "display_name",
            pb::ApiKey { id: root_id.clone(), display_name: "Limited admin's".into(), ..Default::default() },
        ),
        ("description", pb::ApiKey { id: root_id.clone(), description: "owned".into(), ..Default::default() }),
    ] {
        let request =
            pb::UpdateApiKeyRequest { api_key: Some(api_key), update_mask: mask(&[field]), ..Default::default() };
        assert_status(as_limited.update(request).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    }
    // The root key's own use (its last_used_* fields, written by the usage flush at any moment)
    // is not a change of it.
    let without_use = |key: pb::ApiKey| pb::ApiKey {
        last_used_time: None,
        last_used_address: String::new(),
        last_used_agent: String::new(),
        ..key
    };
    assert_eq!(without_use(admin.get(&root_id).await.unwrap()), without_use(before), "untouched");
    // Its own peers it may rename.
    let peer = admin.create("Peer", &["api_keys_admin"]).await.unwrap().api_key.unwrap();
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: peer.id.clone(), display_name: "Peer 2".into(), ..Default::default() }),
        update_mask: mask(&["display_name"]),
        ..Default::default()
    };
    assert_eq!(as_limited.update(rename).await.unwrap().display_name, "Peer 2");
}

/// Issue 7.4: requests without an etag are unconditional. Concurrent ones on one key queue on the
/// key's row lock and all succeed; with an etag, exactly one of those sent with the same etag wins.
#[tokio::test]
async fn concurrent_mutations_without_an_etag_all_succeed() {
    const N: usize = 16;
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let key = admin.create("Hot key", &["read_data"]).await.unwrap().api_key.unwrap();

    let regenerations = futures::future::join_all((0..N).map(|_| admin.regenerate(&key.id, "", false))).await;
    let issued: Vec<pb::RegenerateApiKeySecretResponse> =
        regenerations.into_iter().map(|r| r.expect("every unconditional regenerate succeeds")).collect();
    let version = |k: &pb::ApiKey| k.etag.trim_matches('"').parse::<u64>().unwrap();
    let versions: BTreeSet<u64> = issued.iter().map(|r| version(r.api_key.as_ref().unwrap())).collect();
    assert_eq!(versions.len(), N, "each regenerate was its own step: {versions:?}");
    let last = issued.iter().max_by_key(|r| version(r.api_key.as_ref().unwrap())).unwrap();
    let mut client = app.client().await;
    for response in &issued {
        let result = authenticate_token(&mut client, &response.token, &[]).await;
        if std::ptr::eq(response, last) {
            result.expect("the last returned secret works");
        } else {
            assert_status(result, Code::Unauthenticated, "UNAUTHENTICATED");
        }
    }

    let update = |i: usize, etag: &str| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), description: format!("writer {i}"), ..Default::default() }),
        update_mask: mask(&["description"]),
        etag: etag.to_owned(),
        ..Default::default()
    };
    let updates = futures::future::join_all((0..N).map(|i| admin.update(update(i, "")))).await;
    assert!(updates.iter().all(Result::is_ok), "{updates:?}");
    let current = admin.get(&key.id).await.unwrap();
    assert_eq!(version(&current), 1 + 2 * N as u64, "every write counted");

    // The same etag from N writers: one wins, the rest are told the key moved.
    let guarded = futures::future::join_all((0..N).map(|i| admin.update(update(i, &current.etag)))).await;
    assert_eq!(guarded.iter().filter(|r| r.is_ok()).count(), 1, "{guarded:?}");
    for failed in guarded.into_iter().filter(Result::is_err) {
        assert_status(failed, Code::Aborted, "ETAG_MISMATCH");
    }

    // N deletes: one deletes, the others find nothing (never ABORTED).
    let deletes = futures::future::join_all((0..N).map(|_| admin.delete(&key.id, "", false))).await;
    assert_eq!(deletes.iter().filter(|r| r.is_ok()).count(), 1, "{deletes:?}");
    for failed in deletes.into_iter().filter(Result::is_err) {
        assert_status(failed, Code::NotFound, "API_KEY_NOT_FOUND");
    }
    let events = app.store.audit_events(credential(&last.token).key_id).await.unwrap();
    assert_eq!(events.len(), 1 + N + N + 1 + 1, "one audit event per acknowledged change");
}

/// Issue 7.5: names that look the same are the same name; invisible format characters are refused.
#[tokio::test]
async fn names_that_look_the_same_are_one_name() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let nfc = admin.create("Café Ingest", &[]).await.unwrap().api_key.unwrap();
    assert_status(admin.create("CAFE\u{301} INGEST", &[]).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert_status(admin.create("café ingest", &[]).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert_status(admin.create("CAFÉ INGEST", &[]).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    assert_status(
        admin.create("STRASSE", &[]).await.and(admin.create("Straße", &[]).await),
        Code::AlreadyExists,
        "DISPLAY_NAME_TAKEN",
    );

    // Stored and shown in NFC, whatever form was sent; found by either form.
    let nfd = admin.create("Re\u{301}sume\u{301} bot", &[]).await.unwrap().api_key.unwrap();
    assert_eq!(nfd.display_name, "Résumé bot");
    let found = admin
        .list(pb::ListApiKeysRequest { name_contains: "RE\u{301}SUM".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(found.api_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec![nfd.id.as_str()]);

    // Renaming onto a look-alike collides too.
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: nfd.id.clone(),
            display_name: "CAFE\u{301} ingest".into(),
            ..Default::default()
        }),
        update_mask: mask(&["display_name"]),
        ..Default::default()
    };
    assert_status(admin.update(rename).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");

    for hidden in ["\u{202e}", "\u{200b}", "\u{200d}", "\u{2066}", "\u{feff}"] {
        let spoof = format!("Café{hidden} Ingest");
        let status = assert_status(admin.create(&spoof, &[]).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), vec!["display_name"], "{spoof:?}");
        let status = assert_status(
            admin.create_for_app("App key", &[], &format!("slack{hidden}")).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), vec!["app_id"]);
        let rename = pb::UpdateApiKeyRequest {
            api_key: Some(pb::ApiKey { id: nfc.id.clone(), display_name: spoof.clone(), ..Default::default() }),
            update_mask: mask(&["display_name"]),
            ..Default::default()
        };
        let status = assert_status(admin.update(rename).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), vec!["api_key.display_name"]);
    }
    let listed = admin.list(Default::default()).await.unwrap().api_keys;
    assert_eq!(listed.len(), 4, "administrator, Café Ingest, STRASSE, Résumé bot: {listed:?}");
}

/// Issue 7.7: a client that gives up after the commit (deadline or reset) cannot keep a revoked
/// credential alive in the cache: invalidation runs whatever happens to the caller.
#[tokio::test]
async fn a_delete_cancelled_after_its_commit_still_revokes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Doomed", &["read_data"]).await.unwrap();
    let id = created.api_key.unwrap().id;
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert!(!app.authenticator.cache().is_empty(), "the credential is cached");

    // The delete commits, then waits before invalidating; the client gives up in that window.
    app.keys.pause_before_invalidation_for_tests(std::time::Duration::from_millis(800));
    let mut request = admin.req(pb::DeleteApiKeyRequest { id: id.clone(), ..Default::default() });
    request.set_timeout(std::time::Duration::from_millis(300));
    let cancelled = admin.inner.clone().delete_api_key(request).await.unwrap_err();
    assert!(matches!(cancelled.code(), Code::Cancelled | Code::DeadlineExceeded), "{cancelled:?}");
    assert_eq!(admin.get(&id).await.unwrap().state(), pb::api_key::State::Deleted, "the delete committed");

    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    app.keys.pause_before_invalidation_for_tests(std::time::Duration::ZERO);
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
}

/// The store's bulk create (imports, benchmark seeding): every key with its permissions and its audit
/// event, all or nothing, and the keys authenticate with the secret their precomputed hash is of.
#[tokio::test]
async fn bulk_created_keys_are_complete_or_not_there_at_all() {
    use apikeys::{
        auth::{Secret, hashing::Hasher},
        domain::{Actor, KeyId, display_name},
        store::NewKey,
    };
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let admin_id = credential(&app.admin_token).key_id.to_string();
    let org: apikeys::domain::OrgId = admin.get(&admin_id).await.unwrap().org_id.parse().unwrap();
    let secret = Secret::generate().unwrap();
    let hash = Hasher::new(&fast_hashing()).unwrap().hash(&secret).await.unwrap();
    let key = |i: usize| {
        let name = display_name(&format!("Imported {i:05}"), "display_name").unwrap();
        NewKey {
            id: KeyId(uuid::Uuid::new_v4()),
            org_id: org,
            display_name: name,
            description: String::new(),
            permissions: vec!["read_data".into()],
            app_id: None,
            secret_hash: hash.clone(),
            expire_time: None,
            allowed_cidrs: Vec::new(),
            rate_limit: None,
            actor: Actor::system("import"),
            origin: Default::default(),
        }
    };
    let mut batch: Vec<NewKey> = (0..2500).map(key).collect();
    batch.push(key(7)); // a duplicate name at the very end
    assert_status(
        app.store.create_keys(&batch).await.map_err(tonic::Status::from),
        Code::AlreadyExists,
        "DISPLAY_NAME_TAKEN",
    );
    assert_eq!(admin.list(Default::default()).await.unwrap().api_keys.len(), 1, "nothing was created");

    batch.pop();
    app.store.create_keys(&batch).await.unwrap();
    let mut seen = 0;
    let mut request = pb::ListApiKeysRequest { page_size: 1000, permission: "read_data".into(), ..Default::default() };
    loop {
        let page = admin.list(request.clone()).await.unwrap();
        seen += page.api_keys.len();
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen, 2501, "2500 imported keys and the administrator hold read_data");
    let last = &batch[2499];
    assert_eq!(app.store.audit_events(last.id).await.unwrap()[0].action, "CREATE");
    let token = apikeys::auth::Credential { key_id: last.id.0, secret }.token();
    authenticate_token(&mut app.client().await, &token, &["read_data"]).await.expect("the imported key works");
}
