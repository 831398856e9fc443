//! Property tests of the parsers at the edge (issue 14): credentials (token, Bearer, Basic, ID and
//! secret), display names, page tokens and FieldMask updates. For generated inputs: round trips
//! hold, no input panics, and every rejection is the documented one. The same properties run
//! here with a bounded number of cases and in `benches/props.rs` with a million.

use std::time::{Duration, Instant};

use apikeys::{
    auth::{Credential, Secret},
    domain::{self, Actor, ApiKey, Catalog, KeyId, OrgId},
    error::Error,
    pb,
    service::convert,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};

/// Runs `property` on `cases` inputs from `strategy`; panics with the smallest failing input.
fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> (String, u32, Duration)
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 2_000, ..Config::default() };
    let started = Instant::now();
    if let Err(error) = TestRunner::new(config).run(&strategy, property) {
        panic!("property {name:?} failed: {error}");
    }
    (name.to_owned(), cases, started.elapsed())
}

fn credential() -> impl Strategy<Value = Credential> {
    (any::<[u8; 16]>(), any::<[u8; 32]>())
        .prop_map(|(id, secret)| Credential { key_id: uuid::Uuid::from_bytes(id), secret: Secret::from(secret) })
}

/// Strings biased towards what parsers trip on: near-valid tokens, separators, Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,120}",
        "apk_[0-9A-Za-z]{0,80}",
        "(Bearer|Basic|bearer|BASIC)? {0,3}[ -~]{0,100}",
        "[\\PC\u{200B}\u{202E}\u{FEFF}\t\n ]{0,120}",
    ]
}

fn invalid_argument_naming(error: &Error, fields: &[&str]) -> Result<(), TestCaseError> {
    match error {
        Error::InvalidArgument(violations) => {
            for v in violations {
                prop_assert!(
                    fields.iter().any(|f| v.field.starts_with(f)),
                    "violation of an unexpected field: {v:?} (expected one of {fields:?})"
                );
            }
            prop_assert!(!violations.is_empty());
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("expected INVALID_ARGUMENT, got {other:?}"))),
    }
}

fn key(id: uuid::Uuid, name: &str) -> ApiKey {
    let now = chrono::Utc::now();
    ApiKey {
        id: KeyId(id),
        org_id: OrgId(uuid::Uuid::nil()),
        display_name: name.to_owned(),
        description: String::new(),
        permissions: Vec::new(),
        app_id: None,
        created_by: Actor::system("props"),
        updated_by: Actor::system("props"),
        create_time: now,
        update_time: now,
        version: 1,
        locked: false,
        failed_attempts: 0,
        last_failure_time: None,
        expire_time: None,
        disabled: false,
        previous_secret_expire_time: None,
        delete_time: None,
        purge_time: None,
        allowed_cidrs: Vec::new(),
        rate_limit: None,
        last_used_time: None,
        last_used_address: String::new(),
        last_used_agent: String::new(),
    }
}

/// Every property with `cases` inputs each: (name, cases, time taken).
pub fn run_all(cases: u32) -> Vec<(String, u32, Duration)> {
    let catalog = Catalog::builtin().unwrap();
    let mut results = Vec::new();

    results.push(check("token, Bearer and Basic round trips", cases, credential(), |c| {
        prop_assert_eq!(&Credential::from_token(&c.token()).unwrap(), &c);
        prop_assert_eq!(&Credential::from_authorization(c.bearer().as_bytes()).unwrap(), &c);
        prop_assert_eq!(&Credential::from_authorization(c.basic().as_bytes()).unwrap(), &c);
        let secret = c.secret.expose_text();
        prop_assert_eq!(&Credential::from_parts(&c.key_id.to_string(), &secret).unwrap(), &c);
        Ok(())
    }));

    // The checksum covers the token's text: any one character changed is refused.
    let mutated = (credential(), any::<prop::sample::Index>(), any::<char>());
    results.push(check("a token with one character changed is refused", cases, mutated, |(c, at, ch)| {
        let token = c.token();
        let at = at.index(token.len());
        let original = token.as_bytes()[at] as char;
        prop_assume!(ch != original);
        let mut changed = token[..at].to_owned();
        changed.push(ch);
        changed.push_str(&token[at + 1..]);
        prop_assert!(Credential::from_token(&changed).is_err(), "{changed} was accepted");
        Ok(())
    }));

    results.push(check("any token text: refused, or canonical", cases, hostile_text(), |text| {
        if let Ok(c) = Credential::from_token(&text) {
            prop_assert_eq!(c.token(), text);
        }
        Ok(())
    }));

    let header = prop_oneof![
        any::<Vec<u8>>(),
        hostile_text().prop_map(String::into_bytes),
        "Basic [A-Za-z0-9+/=]{0,200}".prop_map(String::into_bytes),
    ];
    results.push(check("any authorization header: refused, or what it presents", cases, header, |value| {
        if let Ok(c) = Credential::from_authorization(&value) {
            prop_assert_eq!(&Credential::from_authorization(c.bearer().as_bytes()).unwrap(), &c);
        }
        Ok(())
    }));

    results.push(check(
        "any ID and secret: refused, or what they say",
        cases,
        (hostile_text(), hostile_text()),
        |(id, secret)| {
            if let Ok(c) = Credential::from_parts(&id, &secret) {
                prop_assert_eq!(&Credential::from_parts(&c.key_id.to_string(), &c.secret.expose_text()).unwrap(), &c);
            }
            Ok(())
        },
    ));

    results.push(check(
        "display names: normalized once, bounded, refusals name the field",
        cases,
        hostile_text(),
        |raw| {
            match domain::display_name(&raw, "display_name") {
                Ok(name) => {
                    prop_assert!(!name.shown.is_empty());
                    prop_assert!(name.shown.chars().count() <= domain::MAX_DISPLAY_NAME_CHARS);
                    prop_assert_eq!(domain::display_name(&name.shown, "display_name").unwrap(), name);
                }
                Err(violation) => prop_assert_eq!(violation.field, "display_name"),
            }
            Ok(())
        },
    ));

    // A token the server issued leads to the position it was issued for; anything else is refused
    // naming page_token (or, when the filter is also bad, that filter too).
    let issued = (any::<[u8; 16]>(), "[\\PC]{1,100}", 1..50i32, "[a-z ]{0,10}");
    results.push(check("page tokens: issued ones round-trip", cases, issued, |(id, name, size, filter)| {
        let id = uuid::Uuid::from_bytes(id);
        let request = |token: String| pb::ListApiKeysRequest {
            page_size: size,
            page_token: token,
            name_contains: filter.clone(),
            ..Default::default()
        };
        let first = convert::list(request(String::new()), &catalog).unwrap();
        let rows: Vec<(ApiKey, String)> = (0..=first.page_size).map(|_| (key(id, &name), name.clone())).collect();
        let token = first.response(rows).unwrap().next_page_token;
        prop_assert!(!token.is_empty());
        let next = convert::list(request(token.clone()), &catalog).unwrap();
        prop_assert_eq!(next.query.after, Some((name.clone(), id)));
        // The same token with other filters is refused.
        let other =
            pb::ListApiKeysRequest { name_contains: format!("{filter}x"), page_token: token, ..Default::default() };
        invalid_argument_naming(&convert::list(other, &catalog).unwrap_err(), &["page_token"])
    }));

    results.push(check("page tokens: anything else is refused", cases, hostile_text(), |token| {
        let request = pb::ListApiKeysRequest { page_token: token.clone(), ..Default::default() };
        match convert::list(request, &catalog) {
            // A forged token is only a position in the caller's own listing.
            Ok(page) => prop_assert!(page.query.after.is_some() || token.is_empty()),
            Err(error) => invalid_argument_naming(&error, &["page_token"])?,
        }
        let audit = pb::ListAuditEventsRequest { page_token: token, ..Default::default() };
        if let Err(error) = convert::audit_list(audit) {
            invalid_argument_naming(&error, &["page_token"])?;
        }
        Ok(())
    }));

    let paths = prop::collection::vec(
        prop_oneof![
            Just("display_name".to_owned()),
            Just("description".to_owned()),
            Just("permissions".to_owned()),
            Just("expire_time".to_owned()),
            Just("allowed_cidrs".to_owned()),
            Just("rate_limit".to_owned()),
            Just("*".to_owned()),
            Just("id".to_owned()),
            Just("create_time".to_owned()),
            "[a-z_.*]{0,20}",
        ],
        0..6,
    );
    let update = (paths, hostile_text(), hostile_text(), prop::collection::vec("[a-z_]{1,20}", 0..4));
    results.push(check(
        "FieldMask updates: only named fields, refusals name them",
        cases,
        update,
        |(paths, name, description, permissions)| {
            let request = pb::UpdateApiKeyRequest {
                api_key: Some(pb::ApiKey {
                    id: uuid::Uuid::nil().to_string(),
                    display_name: name,
                    description,
                    permissions,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: paths.clone() }),
                ..Default::default()
            };
            match convert::update(request, &catalog) {
                Ok((_, patch, _)) => {
                    let named = |field: &str| paths.is_empty() || paths.iter().any(|p| p == field || p == "*");
                    prop_assert!(patch.display_name.is_none() || named("display_name"));
                    prop_assert!(patch.description.is_none() || named("description"));
                    prop_assert!(patch.permissions.is_none() || named("permissions"));
                    prop_assert!(patch.expire_time.is_none() || named("expire_time"));
                    prop_assert!(patch.allowed_cidrs.is_none() || named("allowed_cidrs"));
                    prop_assert!(patch.rate_limit.is_none() || named("rate_limit"));
                }
                Err(error) => invalid_argument_naming(&error, &["update_mask", "api_key."])?,
            }
            Ok(())
        },
    ));
    results
}

#[test]
fn the_edge_parsers_hold_their_properties() {
    let cases = std::env::var("APIKEYS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1_000);
    let results = run_all(cases);
    assert_eq!(results.len(), 9);
}
