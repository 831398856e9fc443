//! Per-key restrictions (issue 11.4, 11.5): the networks a key may be used from and its rate limit,
//! enforced by Authenticate, apikeys' own auth layer and a consumer's layer (on cache hits too), in
//! the documented order, and changed like every other field.

use std::time::Duration;

use apikeys::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::{
    harness::*,
    incidents::{ALL, Consumer, bearer},
};

async fn create_restricted(
    admin: &Client,
    name: &str,
    permissions: &[&str],
    networks: &[&str],
    rate_limit: Option<(i64, i64)>,
) -> Result<pb::CreateApiKeyResponse, Status> {
    admin
        .create_full(pb::CreateApiKeyRequest {
            display_name: name.into(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            allowed_cidrs: networks.iter().map(|n| (*n).to_owned()).collect(),
            rate_limit: rate_limit.map(|(requests, seconds)| pb::RateLimit {
                requests,
                window: Some(prost_types::Duration { seconds, nanos: 0 }),
            }),
            ..Default::default()
        })
        .await
}

async fn authenticate_from(
    client: &mut pb::api_key_service_client::ApiKeyServiceClient<tonic::transport::Channel>,
    token: &str,
    address: &str,
) -> Result<pb::Principal, Status> {
    let request = pb::AuthenticateRequest { token: token.into(), client_address: address.into(), ..Default::default() };
    Ok(client.authenticate(request).await?.into_inner().principal.unwrap())
}

fn update(id: &str, key: pb::ApiKey, path: &str) -> pb::UpdateApiKeyRequest {
    pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey { id: id.into(), ..key }),
        update_mask: Some(prost_types::FieldMask { paths: vec![path.into()] }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_key_is_refused_outside_its_networks_by_authenticate_apikeys_and_a_consumer() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let mut client = app.client().await;

    // Canonical, sorted, without duplicates; host bits are refused with the network meant.
    let office =
        create_restricted(&admin, "Office", ALL, &["192.168.1.7", "10.0.0.0/8", " 10.0.0.0/8"], None).await.unwrap();
    assert_eq!(office.api_key.as_ref().unwrap().allowed_cidrs, ["10.0.0.0/8", "192.168.1.7/32"]);
    let sloppy = create_restricted(&admin, "Sloppy", ALL, &["10.0.0.0/8", "10.1.2.3/8", "nonsense"], None).await;
    let status = assert_status(sloppy, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["allowed_cidrs[1]", "allowed_cidrs[2]"]);
    assert!(status.message().contains("10.0.0.0/8"), "{}", status.message());

    // Authenticate checks the client address the caller reports; none is no address at all.
    let principal = authenticate_from(&mut client, &office.token, "10.20.30.40").await.unwrap();
    assert_eq!(principal.allowed_cidrs, ["10.0.0.0/8", "192.168.1.7/32"], "the principal carries the rule");
    authenticate_from(&mut client, &office.token, "::ffff:192.168.1.7").await.expect("IPv4-mapped is IPv4");
    for outside in ["192.168.1.8", "2001:db8::1", ""] {
        let refused = authenticate_from(&mut client, &office.token, outside).await;
        assert_status(refused, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
    }
    let bad = authenticate_from(&mut client, &office.token, "10.0.0.300").await;
    assert_eq!(violated_fields(&assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT")), ["client_address"]);
    // The state comes first: a wrong secret from outside is the uniform UNAUTHENTICATED.
    let mut wrong = credential(&office.token);
    wrong.secret = apikeys::auth::Secret::generate().unwrap();
    let refused = authenticate_from(&mut client, &wrong.token(), "192.168.1.8").await;
    assert_status(refused, Code::Unauthenticated, "UNAUTHENTICATED");

    // The network comes before the permissions: from outside, a missing permission is not named.
    let request = pb::AuthenticateRequest {
        token: office.token.clone(),
        client_address: "192.168.1.8".into(),
        required_permissions: vec!["no_such_permission".into()],
        ..Default::default()
    };
    assert_status(client.authenticate(request).await, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
    // A disabled key is refused as UNAUTHENTICATED wherever it is used from.
    let paused = create_restricted(&admin, "Paused", ALL, &["10.0.0.0/8"], None).await.unwrap();
    let disable = pb::DisableApiKeyRequest { id: paused.api_key.unwrap().id, ..Default::default() };
    admin.inner.clone().disable_api_key(admin.req(disable)).await.unwrap();
    for address in ["10.0.0.1", "192.168.1.8"] {
        let refused = authenticate_from(&mut client, &paused.token, address).await;
        assert_status(refused, Code::Unauthenticated, "UNAUTHENTICATED");
    }

    // The consumer and apikeys' own layer see this test's loopback address.
    assert_status(consumer.list(&bearer(&office.token)).await, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
    let admin_elsewhere =
        create_restricted(&admin, "Remote admin", &["api_keys_admin"], &["10.0.0.0/8"], None).await.unwrap();
    let remote_admin = app.client_as(&admin_elsewhere.token).await;
    assert_status(remote_admin.list(Default::default()).await, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
    let local = create_restricted(&admin, "Local", ALL, &["127.0.0.0/8", "::1"], None).await.unwrap();
    consumer.list(&bearer(&local.token)).await.expect("loopback is allowed");

    // Restricting a key that the consumer has cached refuses it there within a second (change
    // stream); lifting the restriction lets it in again.
    let local_id = local.api_key.unwrap().id;
    let narrowed = pb::ApiKey { allowed_cidrs: vec!["10.0.0.0/8".into()], ..Default::default() };
    admin.update(update(&local_id, narrowed, "allowed_cidrs")).await.unwrap();
    eventually(
        "the consumer still admitted a key from outside its new networks after a second",
        Duration::from_millis(1000),
        || async { matches!(consumer.list(&bearer(&local.token)).await, Err(s) if s.code() == Code::PermissionDenied) },
    )
    .await;
    let lifted = admin.update(update(&local_id, pb::ApiKey::default(), "allowed_cidrs")).await.unwrap();
    assert!(lifted.allowed_cidrs.is_empty());
    let events = app.store.audit_events(credential(&local.token).key_id).await.unwrap();
    assert_eq!(events.last().unwrap().changed_fields, r#"["allowed_cidrs"]"#);
    eventually(
        "the consumer still refused a key without restriction after a second",
        Duration::from_millis(1000),
        || async { consumer.list(&bearer(&local.token)).await.is_ok() },
    )
    .await;
}

/// Behind a proxy, apikeys reads the client address from X-Forwarded-For as far as it trusts it.
#[tokio::test]
async fn behind_trusted_proxies_the_forwarded_address_is_checked() {
    let app = TestApp::spawn_with(|config| config.trusted_proxies = 1).await;
    let admin = app.admin().await;
    let proxied =
        create_restricted(&admin, "Proxied admin", &["api_keys_admin"], &["203.0.113.0/24"], None).await.unwrap();
    let mut client = app.client().await;
    let list = |forwarded: Option<&'static str>| {
        let mut request = authed(pb::ListApiKeysRequest::default(), &bearer(&proxied.token));
        if let Some(value) = forwarded {
            request.metadata_mut().insert("x-forwarded-for", value.parse().unwrap());
        }
        request
    };
    client.list_api_keys(list(Some("198.51.100.1, 203.0.113.5"))).await.expect("the hop the proxy added");
    let spoofed = client.list_api_keys(list(Some("203.0.113.5, 198.51.100.1"))).await;
    assert_status(spoofed, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
    assert_status(client.list_api_keys(list(None)).await, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");
}

/// With the proxies' networks configured, a client that reaches apikeys directly cannot claim an
/// address: its header is ignored and its own address is checked.
#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_the_proxies_networks() {
    let app = TestApp::spawn_with(|config| {
        config.trusted_proxies = 1;
        config.trusted_proxy_cidrs = "10.0.0.0/8, fd00::/8".into();
    })
    .await;
    let admin = app.admin().await;
    let proxied =
        create_restricted(&admin, "Proxied admin", &["api_keys_admin"], &["203.0.113.0/24"], None).await.unwrap();
    let mut client = app.client().await;
    let mut request = authed(pb::ListApiKeysRequest::default(), &bearer(&proxied.token));
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.5".parse().unwrap());
    // This test connects from 127.0.0.1, which is no proxy.
    assert_status(client.list_api_keys(request).await, Code::PermissionDenied, "SOURCE_NOT_ALLOWED");

    let bad = apikeys::config::ServerConfig { trusted_proxy_cidrs: "10.0.0.1/8".into(), ..Default::default() };
    let error = bad.validate().unwrap_err();
    assert!(error.contains("trusted_proxy_cidrs") && error.contains("10.0.0.0/8"), "{error}");
}

fn retry_delay(status: &Status) -> Duration {
    status.get_details_retry_info().and_then(|info| info.retry_delay).expect("RetryInfo attached")
}

#[tokio::test]
async fn a_rate_limited_key_gets_resource_exhausted_with_retry_info_here_and_at_a_consumer() {
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let admin = app.admin().await;
    let mut client = app.client().await;

    for ((requests, seconds), field) in [((0, 60), "rate_limit.requests"), ((5, 0), "rate_limit.window")] {
        let bad = create_restricted(&admin, "Bad limit", ALL, &[], Some((requests, seconds))).await;
        assert_eq!(violated_fields(&assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT")), [field]);
    }
    let limited = create_restricted(&admin, "Limited", ALL, &[], Some((3, 60))).await.unwrap();
    let key = limited.api_key.unwrap();
    assert_eq!(key.rate_limit.as_ref().map(|l| (l.requests, l.window.unwrap().seconds)), Some((3, 60)));

    // Refused checks do not count: a missing permission is refused before the rate.
    for _ in 0..5 {
        let missing = authenticate_token(&mut client, &limited.token, &["no_such_permission"]).await;
        assert_status(missing, Code::PermissionDenied, "MISSING_PERMISSIONS");
    }
    // A burst of three, then refused until the next request's turn (60 s / 3).
    for _ in 0..3 {
        authenticate_token(&mut client, &limited.token, &[]).await.unwrap();
    }
    let refused = assert_status(
        authenticate_token(&mut client, &limited.token, &[]).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    let delay = retry_delay(&refused);
    assert!(delay > Duration::from_secs(15) && delay <= Duration::from_secs(20), "{delay:?}");

    // The consumer counts the requests it admits, its cache hits included.
    for _ in 0..3 {
        consumer.list(&bearer(&limited.token)).await.unwrap();
    }
    let at_consumer =
        assert_status(consumer.list(&bearer(&limited.token)).await, Code::ResourceExhausted, "RATE_LIMITED");
    assert!(retry_delay(&at_consumer) > Duration::from_secs(15));

    // Without a limit, no more refusals.
    admin.update(update(&key.id, pb::ApiKey::default(), "rate_limit")).await.unwrap();
    eventually("the consumer kept the old limit after a second", Duration::from_millis(1000), || async {
        consumer.list(&bearer(&limited.token)).await.is_ok()
    })
    .await;
    for _ in 0..10 {
        authenticate_token(&mut client, &limited.token, &[]).await.expect("no limit any more");
    }
}
