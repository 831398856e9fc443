//! Failed-attempt lockout (issue 9): a key is locked after its org's threshold of consecutive failed
//! authentications, refuses even its right secret (the same UNAUTHENTICATED answer, no argon2), shows
//! LOCKED with its failure count, and comes back with UnlockApiKey or a new secret. Counts are written
//! in batches and survive a restart.

use std::time::Duration;

use apikeys::{
    auth::{Credential, Secret},
    pb::{self, api_key::State},
};
use tonic::Code;

use crate::harness::*;

pub async fn set_threshold(admin: &Client, lockout_threshold: i32) -> pb::OrgPolicy {
    let request = pb::UpdateOrgPolicyRequest {
        policy: Some(pb::OrgPolicy { lockout_threshold, ..Default::default() }),
        ..Default::default()
    };
    admin.inner.clone().update_org_policy(admin.req(request)).await.unwrap().into_inner().policy.unwrap()
}

pub fn wrong(token: &str) -> String {
    Credential { key_id: credential(token).key_id, secret: Secret::generate().unwrap() }.token()
}

/// The key, once its state is `state` (failure counts are written about every 100 ms in tests).
pub async fn until_state(admin: &Client, id: &str, state: State) -> pb::ApiKey {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let key = admin.get(id).await.unwrap();
        if key.state() == state {
            return key;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {state:?}: {key:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn too_many_failures_lock_the_key_until_unlocked() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let policy = admin.inner.clone().get_org_policy(admin.req(pb::GetOrgPolicyRequest {})).await.unwrap();
    assert_eq!(policy.into_inner().policy.unwrap().lockout_threshold, 100, "NIST's ceiling by default");
    assert_eq!(set_threshold(&admin, 3).await.lockout_threshold, 3);

    let created = admin.create("Guessed at", &["read_data"]).await.unwrap();
    let id = created.api_key.clone().unwrap().id;
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &[]).await.expect("works, and is now cached");
    assert_eq!(admin.get(&id).await.unwrap().state(), State::Active);
    for _ in 0..3 {
        assert_status(
            authenticate_token(&mut client, &wrong(&created.token), &[]).await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
    }
    let locked = until_state(&admin, &id, State::Locked).await;
    assert_eq!(locked.failed_attempts, 3);
    assert!(locked.last_failure_time.is_some());

    // Locked: the right secret, cached until now, gets the same answer; and no argon2 is spent.
    let before = app.authenticator.hasher().computed();
    let refused = authenticate_token(&mut client, &created.token, &[]).await;
    let refused = assert_status(refused, Code::Unauthenticated, "UNAUTHENTICATED");
    let wrong_answer = assert_status(
        authenticate_token(&mut client, &wrong(&created.token), &[]).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    assert_eq!(refused.message(), wrong_answer.message());
    assert_eq!(app.authenticator.hasher().computed(), before, "refusals of a locked key cost no argon2");
    let listed = admin.list(Default::default()).await.unwrap().api_keys;
    assert_eq!(listed.iter().find(|k| k.id == id).unwrap().state(), State::Locked, "List shows it too");

    // Unlock: same secret, counts cleared, audited.
    let request = pb::UnlockApiKeyRequest { id: id.clone(), etag: locked.etag.clone() };
    let unlocked = admin.inner.clone().unlock_api_key(admin.req(request)).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!((unlocked.state(), unlocked.failed_attempts), (State::Active, 0));
    authenticate_token(&mut client, &created.token, &["read_data"]).await.expect("the same secret works again");
    let actions: Vec<String> = app
        .store
        .audit_events(credential(&created.token).key_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["CREATE", "LOCK", "UNLOCK"]);

    // A weaker admin cannot unlock a stronger key.
    let weak = admin.create("Weak admin", &["api_keys_admin"]).await.unwrap();
    let as_weak = app.client_as(&weak.token).await;
    let request = pb::UnlockApiKeyRequest { id: id.clone(), etag: String::new() };
    assert_status(
        as_weak.inner.clone().unlock_api_key(as_weak.req(request)).await,
        Code::PermissionDenied,
        "PERMISSION_ESCALATION",
    );
}

#[tokio::test]
async fn a_new_secret_unlocks_and_a_success_restarts_the_count() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    set_threshold(&admin, 3).await;
    let created = admin.create("Rotated", &[]).await.unwrap();
    let id = created.api_key.unwrap().id;
    let mut client = app.client().await;

    // Two failures, a success, two failures: never three in a row, never locked.
    for round in 0..2 {
        for _ in 0..2 {
            let _ = authenticate_token(&mut client, &wrong(&created.token), &[]).await;
        }
        if round == 0 {
            app.authenticator.cache().invalidate(credential(&created.token).key_id);
            authenticate_token(&mut client, &created.token, &[]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let key = admin.get(&id).await.unwrap();
    assert_eq!((key.state(), key.failed_attempts), (State::Active, 2), "consecutive failures only");

    let _ = authenticate_token(&mut client, &wrong(&created.token), &[]).await;
    until_state(&admin, &id, State::Locked).await;
    let regenerated = admin.regenerate(&id, "", false).await.unwrap();
    assert_eq!(regenerated.api_key.unwrap().state(), State::Active);
    authenticate_token(&mut client, &regenerated.token, &[]).await.expect("a new secret unlocks");

    // Threshold 0: never locked.
    set_threshold(&admin, 0).await;
    for _ in 0..5 {
        let _ = authenticate_token(&mut client, &wrong(&regenerated.token), &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let key = admin.get(&id).await.unwrap();
    assert_eq!((key.state(), key.failed_attempts), (State::Active, 5));
    let bad = pb::UpdateOrgPolicyRequest {
        policy: Some(pb::OrgPolicy { lockout_threshold: -1, ..Default::default() }),
        ..Default::default()
    };
    let status = assert_status(
        admin.inner.clone().update_org_policy(admin.req(bad)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["policy.lockout_threshold"]);
}

#[tokio::test]
async fn failure_counts_survive_a_restart() {
    let app = TestApp::spawn_with(|c| c.failure_flush_ms = 60_000).await;
    let admin = app.admin().await;
    set_threshold(&admin, 3).await;
    let created = admin.create("Patient target", &[]).await.unwrap();
    let id = created.api_key.unwrap().id;
    let mut client = app.client().await;
    for _ in 0..2 {
        let _ = authenticate_token(&mut client, &wrong(&created.token), &[]).await;
    }
    assert_eq!(admin.get(&id).await.unwrap().failed_attempts, 0, "batched: not written yet");
    let (config, admin_token) = (app.config.clone(), app.admin_token.clone());
    let db = app.stop().await;

    let again = TestApp::start(db, config).await;
    let admin = again.client_as(&admin_token).await;
    assert_eq!(admin.get(&id).await.unwrap().failed_attempts, 2, "written on graceful shutdown");
    let mut client = again.client().await;
    let _ = authenticate_token(&mut client, &wrong(&created.token), &[]).await;
    again.keys.flush_failures().await.unwrap();
    assert_eq!(admin.get(&id).await.unwrap().state(), State::Locked, "the third failure, after the restart, locks");
}

#[tokio::test]
async fn the_cli_unlocks_and_sets_the_policy() {
    let app = TestApp::spawn().await;
    let policy = app.key_cli(&["policy", "--lockout-threshold", "2", "-o", "json"]).await.ok().json();
    assert_eq!(policy["lockout_threshold"], 2);
    let created = app.admin().await.create("CLI target", &[]).await.unwrap();
    let id = created.api_key.unwrap().id;
    let mut client = app.client().await;
    for _ in 0..2 {
        let _ = authenticate_token(&mut client, &wrong(&created.token), &[]).await;
    }
    until_state(&app.admin().await, &id, State::Locked).await;
    let shown = app.key_cli(&["get", &id]).await.ok();
    assert!(shown.stdout.contains("LOCKED"), "{}", shown.stdout);
    let unlocked = app.key_cli(&["unlock", &id, "-o", "json"]).await.ok().json();
    assert_eq!(unlocked["state"], "ACTIVE");
    assert_eq!(unlocked["failed_attempts"], 0);
    authenticate_token(&mut client, &created.token, &[]).await.expect("unlocked");
}
