//! The Authenticate RPC: both credential forms, one answer for every bad credential, required
//! permissions, the verification cache and its invalidation, and the argon2 admission limit.

use std::time::Duration;

use apikeys::{
    auth::{Credential, Secret},
    pb,
};
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn token_and_id_secret_pair_authenticate_to_the_same_principal() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin
        .create_full(pb::CreateApiKeyRequest {
            display_name: "Integration".into(),
            permissions: vec!["read_data".into(), "create_incident".into()],
            app_id: "pagerduty".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = created.api_key.unwrap();
    let mut client = app.client().await;

    let by_token = authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    let by_pair = client
        .authenticate(pb::AuthenticateRequest {
            key_id: key.id.clone(),
            secret: created.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(by_token, by_pair);
    assert_eq!(by_token.key_id, key.id);
    assert_eq!(by_token.org_id, key.org_id);
    assert_eq!(by_token.display_name, "Integration");
    assert_eq!(by_token.permissions, ["create_incident", "read_data"]);
    assert_eq!(by_token.app_id, "pagerduty");
    assert_eq!(by_token.principal_type(), pb::PrincipalType::ApiKey);
    let rules = by_token.restrictions.unwrap();
    assert!(!rules.interactive_login_allowed);
    assert!(!rules.two_factor_required);
    assert!(!rules.can_own_incidents);
    assert!(!rules.can_be_incident_member && !rules.can_be_task_member && !rules.can_be_group_member);
    assert_eq!(rules.unowned_incident_group, "default");
}

#[tokio::test]
async fn every_bad_credential_gets_the_same_answer() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Victim", &[]).await.unwrap();
    let cred = credential(&created.token);
    let mut client = app.client().await;

    let wrong_secret = Credential { key_id: cred.key_id, secret: Secret::generate().unwrap() }.token();
    let unknown_id = Credential { key_id: uuid::Uuid::new_v4(), secret: cred.secret.clone() }.token();
    let mut checksum = created.token.clone().into_bytes();
    let last = checksum.len() - 1;
    checksum[last] = if checksum[last] == b'0' { b'1' } else { b'0' };
    let bad = [
        wrong_secret,
        unknown_id,
        String::from_utf8(checksum).unwrap(),
        created.token[..40].to_owned(),
        "garbage".to_owned(),
        format!("apk_{}", "A".repeat(71)),
        // Just under the 64 KiB request limit: still parsed, and still the same answer.
        "x".repeat(60_000),
    ];
    let mut messages = std::collections::BTreeSet::new();
    for token in &bad {
        let status =
            assert_status(authenticate_token(&mut client, token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
        messages.insert(status.message().to_owned());
        assert!(!status.message().contains(&created.secret));
    }
    for (key_id, secret) in [
        (cred.key_id.to_string(), "short".to_owned()),
        ("not-a-uuid".to_owned(), created.secret.clone()),
        (uuid::Uuid::new_v4().to_string(), created.secret.clone()),
    ] {
        let request = pb::AuthenticateRequest { key_id, secret, ..Default::default() };
        let status = assert_status(client.authenticate(request).await, Code::Unauthenticated, "UNAUTHENTICATED");
        messages.insert(status.message().to_owned());
    }
    assert_eq!(messages.len(), 1, "one message for every cause: {messages:?}");

    // Beyond the request limit the transport refuses it before any parsing (issue 7.8).
    let huge = authenticate_token(&mut client, &"x".repeat(1_000_000), &[]).await.unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");

    // The same bad tokens in metadata, on an admin RPC.
    for token in &bad[..6] {
        let as_bad = app.client_as(token).await;
        assert_status(as_bad.list(Default::default()).await, Code::Unauthenticated, "UNAUTHENTICATED");
    }

    // Neither or both credential forms is a malformed request, not an authentication failure.
    let both = pb::AuthenticateRequest {
        key_id: cred.key_id.to_string(),
        secret: created.secret.clone(),
        token: created.token.clone(),
        ..Default::default()
    };
    assert_status(client.authenticate(both).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(
        client.authenticate(pb::AuthenticateRequest::default()).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    // The genuine credential still works after all that.
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
}

#[tokio::test]
async fn missing_required_permissions_are_named() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create("Reader", &["read_data"]).await.unwrap();
    let mut client = app.client().await;
    let status = assert_status(
        authenticate_token(&mut client, &created.token, &["read_data", "edit_data", "read_playbook", "edit_data"])
            .await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );
    assert!(status.message().contains("edit_data, read_playbook"), "{}", status.message());
}

#[tokio::test]
async fn cache_hits_run_no_argon2_and_changes_invalidate_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Cached", &["read_data"]).await.unwrap();
    let key = created.api_key.unwrap();
    let mut client = app.client().await;
    let hasher = app.authenticator.hasher();

    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    let after_first = hasher.computed();
    for _ in 0..20 {
        authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
    }
    assert_eq!(hasher.computed(), after_first, "cache hits must not run argon2");

    // A permission change is visible at once, though the credential was cached.
    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: key.id.clone(), permissions: vec!["edit_data".into()], ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["permissions".into()] }),
        ..Default::default()
    };
    admin.update(update).await.unwrap();
    assert_status(
        authenticate_token(&mut client, &created.token, &["read_data"]).await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );
    authenticate_token(&mut client, &created.token, &["edit_data"]).await.unwrap();

    // Regenerate kills the cached old secret at once.
    let regenerated = admin.regenerate(&key.id, "", false).await.unwrap();
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    authenticate_token(&mut client, &regenerated.token, &[]).await.unwrap();
    authenticate_token(&mut client, &regenerated.token, &[]).await.unwrap();

    // Delete kills the cached new secret at once.
    admin.delete(&key.id, "", false).await.unwrap();
    assert_status(
        authenticate_token(&mut client, &regenerated.token, &[]).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn cache_entries_expire_after_the_ttl() {
    let app = TestApp::spawn_with(|c| c.auth_cache_ttl_secs = 1).await;
    let created = app.admin().await.create("Short-lived", &[]).await.unwrap();
    let mut client = app.client().await;
    let hasher = app.authenticator.hasher();
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    let n = hasher.computed();
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert_eq!(hasher.computed(), n);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert_eq!(hasher.computed(), n + 1, "expired entry verified again");
}

/// One argon2 slot with costly parameters and a wait queue of `max_waiting`, so a burst overflows it.
fn one_slow_hashing_slot(config: &mut apikeys::config::ServerConfig, max_waiting: usize) {
    config.argon2_memory_kib = 8 * 1024;
    config.argon2_iterations = 2;
    config.hash_concurrency = 1;
    config.hash_queue = max_waiting;
}

/// A well-formed token for `key_id` with a fresh, wrong secret: always a cache miss needing argon2.
fn wrong_secret_token(key_id: uuid::Uuid) -> String {
    Credential { key_id, secret: Secret::generate().unwrap() }.token()
}

#[tokio::test]
async fn a_full_hashing_queue_fails_fast_with_resource_exhausted() {
    let app = TestApp::spawn_with(|c| one_slow_hashing_slot(c, 2)).await;
    let created = app.admin().await.create("Busy", &[]).await.unwrap();
    let key_id = credential(&created.token).key_id;
    let client = app.client().await;
    // Distinct wrong secrets: every one is a cache miss and needs argon2.
    let calls = (0..40).map(|_| {
        let mut client = client.clone();
        let token = wrong_secret_token(key_id);
        tokio::spawn(async move { authenticate_token(&mut client, &token, &[]).await.map(|_| ()) })
    });
    let results = futures::future::join_all(calls).await;
    let mut exhausted = 0;
    for result in results {
        let status = result.unwrap().expect_err("wrong secrets never pass");
        match status.code() {
            Code::ResourceExhausted => exhausted += 1,
            Code::Unauthenticated => {}
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert!(exhausted > 0, "some calls must be shed");
    assert!(exhausted < 40, "some calls must be served");
    assert_eq!(app.authenticator.hasher().waiting(), 0, "queue drained");
}

#[tokio::test]
async fn cancelled_waiters_do_not_leak_queue_slots() {
    let app = TestApp::spawn_with(|c| one_slow_hashing_slot(c, 3)).await;
    let created = app.admin().await.create("Patient", &[]).await.unwrap();
    let key_id = credential(&created.token).key_id;
    let client = app.client().await;
    // Many more callers than slots, each giving up after 5 ms: most are dropped while they wait.
    for _ in 0..3 {
        let calls = (0..20).map(|_| {
            let mut client = client.clone();
            let token = wrong_secret_token(key_id);
            tokio::spawn(async move {
                let mut request = tonic::Request::new(pb::AuthenticateRequest { token, ..Default::default() });
                request.set_timeout(Duration::from_millis(5));
                let _ = client.authenticate(request).await;
            })
        });
        futures::future::join_all(calls).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.authenticator.hasher().waiting() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting count leaked: {}",
            app.authenticator.hasher().waiting()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The queue is usable again: a genuine credential gets verified, not shed.
    let mut client = client.clone();
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
}

#[tokio::test]
async fn oversized_or_hostile_inputs_are_invalid_arguments() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create("Plain", &[]).await.unwrap();
    let mut client = app.client().await;
    let many: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
    let request =
        pb::AuthenticateRequest { token: created.token.clone(), required_permissions: many, ..Default::default() };
    let status = assert_status(client.authenticate(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["required_permissions"]);

    // Names are echoed in PERMISSION_DENIED, so only permission handles are accepted (issue 7.10).
    let long = "a".repeat(65);
    let required =
        vec!["read_data".to_owned(), long, "Read Data".to_owned(), "x\u{202e}y".to_owned(), "ok_name".to_owned()];
    let request =
        pb::AuthenticateRequest { token: created.token.clone(), required_permissions: required, ..Default::default() };
    let status = assert_status(client.authenticate(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        ["required_permissions[1]", "required_permissions[2]", "required_permissions[3]"]
    );
    assert!(!status.message().contains(&"a".repeat(65)), "the bad value is not echoed: {}", status.message());
    // A well-formed handle that is not held is named, as before.
    let request = pb::AuthenticateRequest {
        token: created.token.clone(),
        required_permissions: vec!["ok_name".into()],
        ..Default::default()
    };
    let status = assert_status(client.authenticate(request).await, Code::PermissionDenied, "MISSING_PERMISSIONS");
    assert!(status.message().contains("ok_name"));

    let admin = app.admin().await;
    for (field, request) in [
        ("name_contains", pb::ListApiKeysRequest { name_contains: "a\u{0}b".into(), ..Default::default() }),
        ("app_id", pb::ListApiKeysRequest { app_id: "x\u{0}".into(), ..Default::default() }),
    ] {
        let status = assert_status(admin.list(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), [field]);
    }
}

/// Issue 9: verification and issuing secrets hash in separate lanes. While a flood of wrong secrets
/// fills the verification lane (and is shed), an admin still creates and regenerates keys.
#[tokio::test]
async fn admins_issue_secrets_while_the_verification_lane_is_saturated() {
    let app = TestApp::spawn_with(|c| one_slow_hashing_slot(c, 2)).await;
    let admin = app.admin().await;
    let victim = admin.create("Flooded", &[]).await.unwrap();
    let key_id = credential(&victim.token).key_id;
    let client = app.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut shed = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = authenticate_token(&mut client, &wrong_secret_token(key_id), &[]).await;
                    shed += usize::from(result.is_err_and(|s| s.code() == Code::ResourceExhausted));
                }
                shed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let created = admin.create(&format!("Issued during the flood {i}"), &[]).await;
        created.expect("the admin lane is not the flooded one");
    }
    admin.regenerate(&victim.api_key.unwrap().id, "", false).await.expect("regenerate too");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let shed: usize = futures::future::join_all(flood).await.into_iter().map(Result::unwrap).sum();
    assert!(shed > 0, "the flood did saturate the verification lane");
}

/// Issue 9: key IDs are random and not secret, so an unknown one is refused without any argon2,
/// with the very same answer as a wrong secret.
#[tokio::test]
async fn unknown_key_ids_cost_no_argon2_and_get_the_same_answer() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create("Known", &[]).await.unwrap();
    let mut client = app.client().await;
    let hasher = app.authenticator.hasher();
    let before = hasher.computed();
    let unknown = wrong_secret_token(uuid::Uuid::new_v4());
    let unknown =
        assert_status(authenticate_token(&mut client, &unknown, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_eq!(hasher.computed(), before, "no argon2 for an unknown key");
    let wrong = wrong_secret_token(credential(&created.token).key_id);
    let wrong =
        assert_status(authenticate_token(&mut client, &wrong, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_eq!(hasher.computed(), before + 1, "a known key with a wrong secret is verified");
    assert_eq!(unknown.message(), wrong.message());
}

/// Issue 9: concurrent first verifications of one credential share one argon2 computation.
#[tokio::test]
async fn concurrent_first_verifications_share_one_hash() {
    let app = TestApp::spawn_with(|c| {
        c.argon2_memory_kib = 8 * 1024;
        c.argon2_iterations = 2;
    })
    .await;
    let created = app.admin().await.create("Popular", &["read_data"]).await.unwrap();
    let client = app.client().await;
    let before = app.authenticator.hasher().computed();
    let calls = (0..20).map(|_| {
        let (mut client, token) = (client.clone(), created.token.clone());
        tokio::spawn(async move { authenticate_token(&mut client, &token, &["read_data"]).await.map(|_| ()) })
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap().expect("every caller is authenticated");
    }
    assert_eq!(app.authenticator.hasher().computed() - before, 1, "20 concurrent first calls, one argon2");
}

/// Issue 9: hashes made with other argon2 parameters keep verifying, and are replaced by a hash with
/// the configured ones after their secret verified, without changing the key (same etag).
#[tokio::test]
async fn old_parameters_verify_and_are_rehashed() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Long-lived", &["read_data"]).await.unwrap();
    let key = created.api_key.clone().unwrap();
    let id = credential(&created.token).key_id;
    let mut config = app.config.clone();
    let db = app.stop().await;
    config.argon2_memory_kib = 128;
    config.argon2_iterations = 2;
    let current = apikeys::auth::hashing::Hasher::new(&config.hashing()).unwrap();
    let again = TestApp::start(db, config).await;
    let old = again.store.find_secret_hash(id.into()).await.unwrap().unwrap().hash;
    assert!(!current.is_current(&old), "made with the earlier parameters");

    let mut client = again.client().await;
    authenticate_token(&mut client, &created.token, &["read_data"]).await.expect("old hashes still verify");
    let new = again.store.find_secret_hash(id.into()).await.unwrap().unwrap().hash;
    assert!(current.is_current(&new), "rehashed with the configured parameters");
    assert!(new != old);
    let stored = again.store.get_key(key.org_id.parse().unwrap(), id.into()).await.unwrap();
    assert_eq!(stored.etag(), key.etag, "a rehash is not a change of the key");
    // With the cache emptied, the new hash is what verifies.
    again.authenticator.cache().invalidate(id);
    authenticate_token(&mut client, &created.token, &["read_data"]).await.expect("the new hash verifies");
}

/// Issue 9: guesses against one key cannot fill the verification lane: at most two verifications of
/// one key run at once, the rest are shed at once, and other keys' fresh credentials still verify.
#[tokio::test]
async fn guesses_against_one_key_are_capped_and_other_keys_still_verify() {
    let app = TestApp::spawn_with(|c| {
        c.argon2_memory_kib = 8 * 1024;
        c.argon2_iterations = 2;
        c.hash_concurrency = 8;
        c.hash_queue = 64;
    })
    .await;
    let admin = app.admin().await;
    let target = credential(&admin.create("Guessed", &[]).await.unwrap().token).key_id;
    let other = admin.create("Bystander", &["read_data"]).await.unwrap();
    let client = app.client().await;
    let guesses = (0..12).map(|_| {
        let mut client = client.clone();
        let token = wrong_secret_token(target);
        tokio::spawn(async move { authenticate_token(&mut client, &token, &[]).await.map(|_| ()) })
    });
    let bystander = {
        let (mut client, token) = (client.clone(), other.token.clone());
        tokio::spawn(async move { authenticate_token(&mut client, &token, &["read_data"]).await.map(|_| ()) })
    };
    let mut shed = 0;
    for result in futures::future::join_all(guesses).await {
        match result.unwrap().expect_err("wrong secrets never pass").code() {
            Code::ResourceExhausted => shed += 1,
            Code::Unauthenticated => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(shed >= 4, "12 concurrent guesses at one key, at most 2 verified at a time: {shed} shed");
    bystander.await.unwrap().expect("another key's fresh credential verifies meanwhile");
}

#[tokio::test]
async fn an_address_that_spent_its_failure_budget_is_tarpitted_and_its_cached_credentials_still_pass() {
    let app = TestApp::spawn_with(|c| {
        // One failure a second, bursts of two: nothing refills within the test's steps.
        c.auth_failures_per_peer = 1;
        c.transport.max_in_flight_per_peer = 1;
    })
    .await;
    let admin = app.admin().await;
    let cached = admin.create("Cached", &[]).await.unwrap().token;
    let fresh = admin.create("Fresh", &[]).await.unwrap().token;
    let mut client = app.client().await;
    authenticate_token(&mut client, &cached, &[]).await.unwrap();
    let forged = || Credential { key_id: uuid::Uuid::new_v4(), secret: Secret::generate().unwrap() }.token();

    // A burst of twice the rate is allowed and answered as usual ...
    for _ in 0..2 {
        assert_status(authenticate_token(&mut client, &forged(), &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    }
    // ... then credentials that are not cached are refused after the tarpit, valid ones too.
    for token in [forged(), fresh.clone()] {
        let started = std::time::Instant::now();
        let refused = authenticate_token(&mut client, &token, &[]).await;
        assert_status(refused, Code::ResourceExhausted, "TOO_MANY_FAILURES");
        assert!(started.elapsed() >= apikeys::failure_budget::TARPIT, "answered before the tarpit");
    }
    authenticate_token(&mut client, &cached, &[]).await.expect("a cached credential still passes");

    // Its calls beyond the in-flight cap are held for the tarpit too (PEER_BUSY), not answered at
    // once: a flooder cannot make the server spend its time refusing it.
    let crowd = (0..3).map(|_| {
        let (mut client, token) = (client.clone(), forged());
        async move {
            let started = std::time::Instant::now();
            let status = authenticate_token(&mut client, &token, &[]).await.unwrap_err();
            (apikeys::error::status_reason(&status), started.elapsed())
        }
    });
    let answers = futures::future::join_all(crowd).await;
    let busy: Vec<_> = answers.iter().filter(|(reason, _)| reason == "PEER_BUSY").collect();
    assert!(!busy.is_empty(), "{answers:?}");
    assert!(busy.iter().all(|(_, took)| *took >= apikeys::failure_budget::TARPIT), "{answers:?}");

    // Another address keeps its own budget.
    let other = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut other = pb::api_key_service_client::ApiKeyServiceClient::new(other);
    authenticate_token(&mut other, &fresh, &[]).await.expect("another address is not affected");

    // The budget refills (one a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_status(authenticate_token(&mut client, &forged(), &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
}

/// Authenticate answers a cached credential with bytes kept with its cache entry: after the key is
/// renamed and its permissions change, the answer is the new principal, never the old bytes.
#[tokio::test]
async fn cached_answers_follow_changes_of_the_key() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let created = admin.create("Before", &["read_data"]).await.unwrap();
    let id = created.api_key.as_ref().unwrap().id.clone();
    let mut client = app.client().await;
    let first = authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    let cached = authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert_eq!(first, cached, "a cached answer is the verified principal");
    assert_eq!(cached.display_name, "Before");
    assert!(app.authenticator.cache().hits() >= 1, "the second answer came from the cache");

    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: id.clone(),
            display_name: "After".into(),
            permissions: vec!["read_data".into(), "edit_data".into()],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into(), "permissions".into()] }),
        ..Default::default()
    };
    admin.update(update).await.unwrap();
    for _ in 0..2 {
        let after = authenticate_token(&mut client, &created.token, &["edit_data"]).await.unwrap();
        assert_eq!(after.display_name, "After");
        assert_eq!(after.permissions, vec!["edit_data".to_owned(), "read_data".to_owned()]);
        assert_eq!(after.key_id, first.key_id);
        assert_eq!(after.restrictions, first.restrictions);
    }
}
