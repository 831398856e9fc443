//! Key lifecycle (issue 11): expiry (with the org's maximum key lifetime) and enable / disable,
//! including their effect on warm caches, here and at a consumer.

use std::time::Duration;

use apikeys::pb::{self, api_key::State};
use tonic::Code;

use crate::{
    harness::*,
    incidents::{ALL, Consumer, bearer},
};

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 }
}

fn from_timestamp(t: &prost_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.seconds, 0).unwrap()
}

async fn create_expiring(
    admin: &Client,
    name: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<pb::CreateApiKeyResponse, tonic::Status> {
    admin
        .create_full(pb::CreateApiKeyRequest {
            display_name: name.into(),
            permissions: ALL.iter().map(|p| (*p).to_owned()).collect(),
            expire_time: Some(timestamp(at)),
            ..Default::default()
        })
        .await
}

async fn set_policy(admin: &Client, policy: pb::OrgPolicy, paths: &[&str]) -> Result<pb::OrgPolicy, tonic::Status> {
    let update_mask =
        (!paths.is_empty()).then(|| prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() });
    let request = pb::UpdateOrgPolicyRequest { policy: Some(policy), update_mask };
    Ok(admin.inner.clone().update_org_policy(admin.req(request)).await?.into_inner().policy.unwrap())
}

#[tokio::test]
async fn an_expired_key_is_refused_even_from_warm_caches_here_and_at_a_consumer() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    // Whole seconds: the timestamp travels without its fraction.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let created = create_expiring(&admin, "Short-lived", expires).await.unwrap();
    let key = created.api_key.unwrap();
    assert_eq!(
        key.expire_time.as_ref().map(from_timestamp),
        Some(chrono::DateTime::from_timestamp(expires.timestamp(), 0).unwrap())
    );
    assert_eq!(key.state(), State::Active);

    // Verified, cached here (the second call is a hit) and at the consumer.
    let mut client = app.client().await;
    let principal = authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert_eq!(principal.expire_time, key.expire_time, "the principal carries the expiry");
    let hits = app.authenticator.cache().hits();
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    assert_eq!(app.authenticator.cache().hits(), hits + 1);
    consumer.list(&bearer(&created.token)).await.unwrap();

    // Past the expiry nothing trusts the entries, though both caches' TTLs (60 s, 30 s) run on.
    let wait = (from_timestamp(key.expire_time.as_ref().unwrap()) - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_status(consumer.list(&bearer(&created.token)).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_eq!(admin.get(&key.id).await.unwrap().state(), State::Expired);
}

#[tokio::test]
async fn expire_times_are_checked_against_the_org_policy() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let now = chrono::Utc::now();

    let past = create_expiring(&admin, "Past", now - chrono::Duration::seconds(10)).await;
    assert_eq!(violated_fields(&assert_status(past, Code::InvalidArgument, "INVALID_ARGUMENT")), ["expire_time"]);

    // A maximum of an hour; the lockout threshold, not in the mask, stays.
    let hour = prost_types::Duration { seconds: 3600, nanos: 0 };
    let policy = pb::OrgPolicy { max_key_lifetime: Some(hour), ..Default::default() };
    let policy = set_policy(&admin, policy, &["max_key_lifetime"]).await.unwrap();
    assert_eq!((policy.lockout_threshold, policy.max_key_lifetime.map(|d| d.seconds)), (100, Some(3600)));

    // A new key without an expiry gets now + the maximum; one beyond it is refused.
    let defaulted = admin.create("Defaulted", &[]).await.unwrap().api_key.unwrap();
    let at = from_timestamp(defaulted.expire_time.as_ref().expect("an expiry from the policy"));
    assert!((at - (now + chrono::Duration::hours(1))).num_seconds().abs() < 60, "{at}");
    let far = create_expiring(&admin, "Far", now + chrono::Duration::hours(2)).await;
    assert_eq!(violated_fields(&assert_status(far, Code::InvalidArgument, "INVALID_ARGUMENT")), ["expire_time"]);

    // Updates: within the maximum, fine (and audited); removing the expiry, refused.
    let update = |expire_time: Option<prost_types::Timestamp>| pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: defaulted.id.clone(), expire_time, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["expire_time".into()] }),
        ..Default::default()
    };
    let sooner = timestamp(now + chrono::Duration::minutes(30));
    assert_eq!(admin.update(update(Some(sooner))).await.unwrap().expire_time, Some(sooner));
    let events = app.store.audit_events(defaulted.id.parse::<uuid::Uuid>().unwrap()).await.unwrap();
    assert_eq!(events.last().unwrap().changed_fields, r#"["expire_time"]"#);
    let never = admin.update(update(None)).await;
    assert_eq!(
        violated_fields(&assert_status(never, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["api_key.expire_time"]
    );

    // Without a mask the threshold is set and an unset maximum is left alone.
    let policy = set_policy(&admin, pb::OrgPolicy { lockout_threshold: 50, ..Default::default() }, &[]).await.unwrap();
    assert_eq!((policy.lockout_threshold, policy.max_key_lifetime.map(|d| d.seconds)), (50, Some(3600)));
    // No maximum again: keys may be created without an expiry, and have none.
    set_policy(&admin, pb::OrgPolicy::default(), &["max_key_lifetime"]).await.unwrap();
    assert_eq!(admin.create("Forever", &[]).await.unwrap().api_key.unwrap().expire_time, None);
    let short = prost_types::Duration { seconds: 5, nanos: 0 };
    let bad = set_policy(&admin, pb::OrgPolicy { max_key_lifetime: Some(short), ..Default::default() }, &["*"]).await;
    assert_eq!(
        violated_fields(&assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["policy.max_key_lifetime"]
    );
}

#[tokio::test]
async fn a_disabled_key_is_refused_at_once_keeps_its_secret_and_comes_back_on_enable() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let created = admin.create("Switchable", ALL).await.unwrap();
    let key = created.api_key.unwrap();
    let mut client = app.client().await;
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    consumer.list(&bearer(&created.token)).await.unwrap();

    let disable = |etag: &str, ack: bool| pb::DisableApiKeyRequest {
        id: key.id.clone(),
        etag: etag.into(),
        acknowledge_app_impact: ack,
    };
    let stale = admin.inner.clone().disable_api_key(admin.req(disable("\"999\"", false))).await;
    assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    let disabled =
        admin.inner.clone().disable_api_key(admin.req(disable(&key.etag, false))).await.unwrap().into_inner();
    assert_eq!(disabled.api_key.unwrap().state(), State::Disabled);

    // Refused at once here (the cache entry is gone) and, through the change stream, at the consumer.
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    eventually("the consumer still accepted a disabled key after a second", Duration::from_millis(1000), || async {
        matches!(consumer.list(&bearer(&created.token)).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // Enabled again: the same secret works.
    let enable = pb::EnableApiKeyRequest { id: key.id.clone(), etag: String::new() };
    let enabled = admin.inner.clone().enable_api_key(admin.req(enable)).await.unwrap().into_inner();
    assert_eq!(enabled.api_key.unwrap().state(), State::Active);
    authenticate_token(&mut client, &created.token, &[]).await.unwrap();
    let actions: Vec<String> = app
        .store
        .audit_events(key.id.parse::<uuid::Uuid>().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["CREATE", "DISABLE", "ENABLE"]);

    // An app's key needs the acknowledgement: disabling it stops the app.
    let app_key = admin.create_for_app("App key", &[], "statuspage").await.unwrap().api_key.unwrap();
    let request = pb::DisableApiKeyRequest { id: app_key.id.clone(), ..Default::default() };
    let unacknowledged = admin.inner.clone().disable_api_key(admin.req(request)).await;
    assert_status(unacknowledged, Code::FailedPrecondition, "APP_MANAGED_KEY");
    let request = pb::DisableApiKeyRequest { id: app_key.id, acknowledge_app_impact: true, ..Default::default() };
    admin.inner.clone().disable_api_key(admin.req(request)).await.unwrap();
}

#[tokio::test]
async fn a_rotation_with_a_grace_period_keeps_the_old_secret_until_it_ends() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let created = admin.create("Rotating", ALL).await.unwrap();
    let key = created.api_key.unwrap();
    let mut client = app.client().await;
    let regenerate = |ttl_secs: i64| pb::RegenerateApiKeySecretRequest {
        id: key.id.clone(),
        previous_secret_ttl: Some(prost_types::Duration { seconds: ttl_secs, nanos: 0 }),
        ..Default::default()
    };
    let too_long = admin.inner.clone().regenerate_api_key_secret(admin.req(regenerate(8 * 86_400))).await;
    assert_eq!(
        violated_fields(&assert_status(too_long, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["previous_secret_ttl"]
    );

    // A grace of 3 s: both secrets work, here and at the consumer; the old one's principal carries
    // the end of the grace period as its expiry.
    let rotated = admin.inner.clone().regenerate_api_key_secret(admin.req(regenerate(3))).await.unwrap().into_inner();
    let until = rotated.api_key.as_ref().unwrap().previous_secret_expire_time.expect("a grace period");
    let old =
        authenticate_token(&mut client, &created.token, &[]).await.expect("the old secret works in the grace period");
    assert_eq!(old.expire_time.map(|t| t.seconds), Some(until.seconds));
    authenticate_token(&mut client, &rotated.token, &[]).await.expect("the new secret works at once");
    consumer.list(&bearer(&created.token)).await.unwrap();
    consumer.list(&bearer(&rotated.token)).await.unwrap();

    // After it, the old secret is refused everywhere, warm caches included; the new one works.
    let wait = (from_timestamp(&until) - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1100)).await;
    assert_status(authenticate_token(&mut client, &created.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_status(consumer.list(&bearer(&created.token)).await, Code::Unauthenticated, "UNAUTHENTICATED");
    authenticate_token(&mut client, &rotated.token, &[]).await.unwrap();
    assert_eq!(admin.get(&key.id).await.unwrap().previous_secret_expire_time, None);

    // A second rotation during a grace period ends it: at most two live secrets.
    let second = admin.inner.clone().regenerate_api_key_secret(admin.req(regenerate(600))).await.unwrap().into_inner();
    let third = admin.inner.clone().regenerate_api_key_secret(admin.req(regenerate(600))).await.unwrap().into_inner();
    assert_status(authenticate_token(&mut client, &rotated.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    authenticate_token(&mut client, &second.token, &[]).await.expect("the one before the last rotation works");
    authenticate_token(&mut client, &third.token, &[]).await.expect("the newest works");
    // Without a grace period, only the new secret works.
    let last = admin.regenerate(&key.id, "", false).await.unwrap();
    assert_status(authenticate_token(&mut client, &third.token, &[]).await, Code::Unauthenticated, "UNAUTHENTICATED");
    authenticate_token(&mut client, &last.token, &[]).await.unwrap();
}

#[tokio::test]
async fn keys_are_listed_by_state_and_by_expiry() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let now = chrono::Utc::now();
    let soon = create_expiring(&admin, "Soon", now + chrono::Duration::seconds(2)).await.unwrap().api_key.unwrap();
    create_expiring(&admin, "Later", now + chrono::Duration::days(30)).await.unwrap();
    let off = admin.create("Off", &[]).await.unwrap().api_key.unwrap();
    let request = pb::DisableApiKeyRequest { id: off.id.clone(), ..Default::default() };
    admin.inner.clone().disable_api_key(admin.req(request)).await.unwrap();

    let names = |state: State, before: Option<chrono::DateTime<chrono::Utc>>| {
        let admin = admin.clone();
        async move {
            let request = pb::ListApiKeysRequest {
                state: state.into(),
                expiring_before: before.map(timestamp),
                ..Default::default()
            };
            let mut names: Vec<String> =
                admin.list(request).await.unwrap().api_keys.into_iter().map(|k| k.display_name).collect();
            names.sort();
            names
        }
    };
    assert_eq!(names(State::Disabled, None).await, ["Off"]);
    assert_eq!(names(State::Active, None).await, ["Administrator", "Later", "Soon"]);
    let week = Some(now + chrono::Duration::days(7));
    assert_eq!(names(State::Active, week).await, ["Soon"], "about to expire");
    assert_eq!(names(State::Unspecified, Some(now + chrono::Duration::days(60))).await, ["Later", "Soon"]);
    let wait = (from_timestamp(soon.expire_time.as_ref().unwrap()) - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_eq!(names(State::Expired, None).await, ["Soon"]);
    assert_eq!(names(State::Active, week).await, Vec::<String>::new());

    // A page token is bound to its filters, these included.
    let first = admin
        .list(pb::ListApiKeysRequest { page_size: 1, state: State::Active.into(), ..Default::default() })
        .await
        .unwrap();
    let other = pb::ListApiKeysRequest {
        page_token: first.next_page_token,
        state: State::Disabled.into(),
        ..Default::default()
    };
    assert_eq!(
        violated_fields(&assert_status(admin.list(other).await, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["page_token"]
    );
    let bad = pb::ListApiKeysRequest { state: 99, ..Default::default() };
    assert_eq!(
        violated_fields(&assert_status(admin.list(bad).await, Code::InvalidArgument, "INVALID_ARGUMENT")),
        ["state"]
    );
}
