//! Human administrators (issue 13): people signed in with a platform-issued JWT administer keys
//! as API keys do, under the same permission rules, and are recorded by name. The test is the
//! issuer: its key pairs (RSA 2048, P-256, Ed25519) are made at test time, and it serves the JWKS
//! from a file or over HTTP.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use apikeys::{config::JwtConfig, pb};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::*;

const ISSUER: &str = "https://id.platform.test";
const AUDIENCE: &str = "apikeys";

/// A signing key of the test issuer, and its public JWK.
pub struct Signer {
    alg: Algorithm,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl Signer {
    pub fn new(alg: Algorithm, kid: &str) -> Self {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(rsa_pkcs1_der()),
            Algorithm::ES256 => EncodingKey::from_ec_der(
                &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_der(),
            ),
            Algorithm::EdDSA => {
                // PKCS#8 v1 of a fresh Ed25519 seed (RFC 8410), the form the signer reads.
                let mut der = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
                ];
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).unwrap();
                der.extend_from_slice(&seed);
                EncodingKey::from_ed_der(&der)
            }
            other => panic!("no test keys for {other:?}"),
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self { alg, key, jwk: serde_json::to_value(jwk).unwrap() }
    }

    fn kid(&self) -> &str {
        self.jwk["kid"].as_str().unwrap()
    }

    /// `claims` signed, with this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// One 2048-bit RSA key per test process (generating one takes a while in a debug build).
fn rsa_pkcs1_der() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        key.to_pkcs1_der().unwrap().as_bytes().to_vec()
    })
}

fn jwks(signers: &[&Signer]) -> String {
    json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Replaces `path` at once (as a deployment tool does), so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(staged, path).unwrap();
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The claims of a person of `org` holding `permissions`, valid for ten minutes.
pub fn person(user: &str, name: &str, org: &str, permissions: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user,
        "name": name,
        "org": org,
        "permissions": permissions,
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
    })
}

pub fn jwt_config(jwks_file: Option<PathBuf>, jwks_url: &str) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file,
        jwks_url: jwks_url.into(),
        ..JwtConfig::default()
    }
}

/// A server accepting JWTs signed by `signers` (from a JWKS file), and the bootstrap org's ID.
async fn platform(signers: &[&Signer]) -> (TestApp, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(signers)).unwrap();
    let app = TestApp::spawn_with(|config| config.jwt = jwt_config(Some(path), "")).await;
    let org = authenticate_token(&mut app.client().await, &app.admin_token, &[]).await.unwrap().org_id;
    (app, dir, org)
}

#[tokio::test]
async fn people_administer_keys_with_platform_jwts_and_are_recorded_by_name() {
    let signers = [
        Signer::new(Algorithm::RS256, "rsa-1"),
        Signer::new(Algorithm::ES256, "ec-1"),
        Signer::new(Algorithm::EdDSA, "ed-1"),
    ];
    let (app, _dir, org) = platform(&signers.iter().collect::<Vec<_>>()).await;
    for signer in &signers {
        let alg = format!("{:?}", signer.alg);
        let jwt = signer.sign(&person(
            &format!("user-{alg}"),
            &format!("Ada ({alg})"),
            &org,
            &["api_keys_admin", "read_data"],
        ));
        let ada = app.client_as(&jwt).await;
        let created = ada.create(&format!("Made with {alg}"), &["read_data"]).await.unwrap();
        let key = created.api_key.unwrap();
        let by = key.created_by.unwrap();
        assert_eq!(by.r#type(), pb::ActorType::User, "{alg}");
        assert_eq!(
            (by.id.as_str(), by.display_name.as_str()),
            (format!("user-{alg}").as_str(), format!("Ada ({alg})").as_str())
        );
        // What a person made is an ordinary key.
        let mut client = app.client().await;
        authenticate_token(&mut client, &created.token, &["read_data"]).await.unwrap();
        // Another person changes it, and is recorded as its last editor.
        let grace = app
            .client_as(&signers[2].sign(&person("grace", "Grace Hopper", &org, &["api_keys_admin", "read_data"])))
            .await;
        let update = pb::UpdateApiKeyRequest {
            api_key: Some(pb::ApiKey { id: key.id.clone(), description: "reviewed".into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
            ..Default::default()
        };
        let updated = grace.update(update).await.unwrap();
        let by = updated.updated_by.unwrap();
        assert_eq!(
            (by.r#type(), by.id.as_str(), by.display_name.as_str()),
            (pb::ActorType::User, "grace", "Grace Hopper")
        );
        // The audit trail names both people.
        let events = ada
            .inner
            .clone()
            .list_audit_events(ada.req(pb::ListAuditEventsRequest { key_id: key.id.clone(), ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let actors: Vec<(pb::ActorType, String)> =
            events.iter().map(|e| e.actor.as_ref().unwrap()).map(|a| (a.r#type(), a.id.clone())).collect();
        assert!(actors.contains(&(pb::ActorType::User, format!("user-{alg}"))), "{actors:?}");
        assert!(actors.contains(&(pb::ActorType::User, "grace".to_owned())), "{actors:?}");
    }
    // Permissions as one space-separated string (an OAuth `scope`-style claim) work the same.
    let mut claims = person("scoped", "Scoped", &org, &[]);
    claims["permissions"] = json!("read_data api_keys_admin");
    let scoped = app.client_as(&signers[1].sign(&claims)).await;
    scoped.create("Scoped grant", &["read_data"]).await.unwrap();
}

#[tokio::test]
async fn the_escalation_rule_binds_people_as_it_binds_keys() {
    let signer = Signer::new(Algorithm::ES256, "ec-1");
    let (app, _dir, org) = platform(&[&signer]).await;
    let held = app.admin().await.create("Holds read_data", &["read_data"]).await.unwrap().api_key.unwrap();

    // An administrator who holds nothing else grants nothing else, and cannot manage a key holding more.
    let plain = app.client_as(&signer.sign(&person("plain", "Plain Admin", &org, &["api_keys_admin"]))).await;
    assert_status(plain.create("Escalating", &["read_data"]).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    plain.create("Within bounds", &[]).await.unwrap();
    assert_status(plain.delete(&held.id, "", false).await, Code::PermissionDenied, "PERMISSION_ESCALATION");
    assert_status(plain.regenerate(&held.id, "", false).await, Code::PermissionDenied, "PERMISSION_ESCALATION");

    // Without the administration permission, nothing.
    let user = app.client_as(&signer.sign(&person("user", "Not An Admin", &org, &["read_data"]))).await;
    let status = assert_status(
        user.list(pb::ListApiKeysRequest::default()).await,
        Code::PermissionDenied,
        "MISSING_PERMISSIONS",
    );
    assert!(status.message().contains("api_keys_admin"), "{}", status.message());

    // An administrator of another organization sees none of this one's keys.
    let other_org = uuid::Uuid::new_v4().to_string();
    let stranger = app
        .client_as(&signer.sign(&person("stranger", "Stranger", &other_org, &["api_keys_admin", "read_data"])))
        .await;
    assert!(stranger.list(pb::ListApiKeysRequest::default()).await.unwrap().api_keys.is_empty());
    assert_eq!(stranger.get(&held.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn forged_misdirected_and_expired_jwts_are_refused() {
    let rsa = Signer::new(Algorithm::RS256, "rsa-1");
    let ec = Signer::new(Algorithm::ES256, "ec-1");
    // The set also holds a malformed Ed25519 key (16 bytes): skipped, and nothing panics on it.
    let mut short = Signer::new(Algorithm::EdDSA, "ed-short");
    short.jwk["x"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 16]));
    let (app, _dir, org) = platform(&[&rsa, &ec, &short]).await;
    let good = person("ada", "Ada", &org, &["api_keys_admin"]);
    let b64 = |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    // Not in the set: same kid as a trusted key, different key pair.
    let impostor = Signer::new(Algorithm::ES256, "ec-1");
    let unknown = Signer::new(Algorithm::ES256, "ec-2");
    // Key confusion: an HMAC made with the RSA key's public modulus as the "secret".
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let public = rsa.jwk["n"].as_str().unwrap().as_bytes();
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(public).unwrap()).unwrap()
    };
    let tampered = {
        let token = ec.sign(&good);
        let parts: Vec<&str> = token.split('.').collect();
        let escalated = with(json!({"permissions": ["api_keys_admin", "read_data", "write_data"]}));
        format!("{}.{}.{}", parts[0], b64(&escalated), parts[2])
    };
    let huge = ec.sign(&with(json!({"padding": "x".repeat(9000)})));
    let cases: Vec<(&str, String)> = vec![
        ("alg none, no signature", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&good))),
        ("alg none, any signature", format!("{}.{}.AAAA", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&good))),
        ("HS256 keyed with the RSA public key", confused),
        ("RS256 header on the EC key's kid", {
            let token = ec.sign(&good);
            let rest = token.split_once('.').unwrap().1;
            format!("{}.{rest}", b64(&json!({"alg": "RS256", "kid": "ec-1"})))
        }),
        ("signed by another key under a trusted kid", impostor.sign(&good)),
        ("an unknown kid", unknown.sign(&good)),
        ("payload changed after signing", tampered),
        ("another issuer", ec.sign(&with(json!({"iss": "https://evil.test"})))),
        ("another audience", ec.sign(&with(json!({"aud": "billing"})))),
        ("expired beyond the leeway", ec.sign(&with(json!({"exp": now() - 120})))),
        ("not valid yet", ec.sign(&with(json!({"nbf": now() + 120})))),
        ("no exp", ec.sign(&with(json!({"exp": null})))),
        ("no aud", ec.sign(&with(json!({"aud": null})))),
        ("no iss", ec.sign(&with(json!({"iss": null})))),
        ("an aud list without this audience", ec.sign(&with(json!({"aud": ["billing", "reports"]})))),
        ("an iss that is not a string", ec.sign(&with(json!({"iss": 7})))),
        ("an EdDSA token when the only Ed25519 key in the set is malformed", {
            let ed = Signer::new(Algorithm::EdDSA, "ed-short");
            ed.sign(&good)
        }),
        ("exp as a string", ec.sign(&with(json!({"exp": (now() + 600).to_string()})))),
        ("no user ID", ec.sign(&with(json!({"sub": null})))),
        ("no organization", ec.sign(&with(json!({"org": null})))),
        ("an organization that is not an ID", ec.sign(&with(json!({"org": "acme"})))),
        ("permissions that are not names", ec.sign(&with(json!({"permissions": {"admin": true}})))),
        ("longer than 8 KiB", huge),
        ("not a JWT at all", "eyJhbGciOiJFUzI1NiJ9.e30".into()),
    ];
    for (case, token) in &cases {
        let status = app.client_as(token).await.list(pb::ListApiKeysRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(status.message(), "missing or invalid credentials", "{case}: one answer for every refusal");
    }
    // An aud list naming this audience is fine, and so is a token naming no key when the set has
    // one key of its algorithm.
    let listed = app.client_as(&ec.sign(&with(json!({"aud": ["billing", AUDIENCE]})))).await;
    listed.list(pb::ListApiKeysRequest::default()).await.unwrap();
    let unnamed = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &good, &ec.key).unwrap();
    app.client_as(&unnamed).await.list(pb::ListApiKeysRequest::default()).await.unwrap();
    // Within the leeway (60 s by default) an expired token still passes: clocks drift.
    let late = app.client_as(&ec.sign(&with(json!({"exp": now() - 20})))).await;
    late.list(pb::ListApiKeysRequest::default()).await.unwrap();
    // And the good token itself, with either key.
    for signer in [&rsa, &ec] {
        app.client_as(&signer.sign(&good)).await.list(pb::ListApiKeysRequest::default()).await.unwrap();
    }
}

/// Whether a person's JWT signed by `signer` lists keys.
async fn accepted(app: &TestApp, signer: &Signer, org: &str) -> bool {
    let jwt = signer.sign(&person("rotating", "Rotating", org, &["api_keys_admin"]));
    match app.client_as(&jwt).await.list(pb::ListApiKeysRequest::default()).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::Unauthenticated => false,
        Err(status) => panic!("{status:?}"),
    }
}

#[tokio::test]
async fn a_jwks_file_is_reloaded_when_it_changes() {
    let old = Signer::new(Algorithm::EdDSA, "2026-01");
    let new = Signer::new(Algorithm::EdDSA, "2026-02");
    let (app, dir, org) = platform(&[&old]).await;
    let path = dir.path().join("jwks.json");
    assert!(accepted(&app, &old, &org).await);
    assert!(!accepted(&app, &new, &org).await);

    // The issuer publishes its next key: it is trusted within a couple of seconds.
    write_atomically(&path, &jwks(&[&old, &new]));
    eventually("the new key is trusted", Duration::from_secs(5), || accepted(&app, &new, &org)).await;
    assert!(accepted(&app, &old, &org).await);
    // The old key is retired: its tokens stop working.
    write_atomically(&path, &jwks(&[&new]));
    eventually("the retired key is refused", Duration::from_secs(5), || async { !accepted(&app, &old, &org).await })
        .await;
    // A broken file keeps the keys in use.
    write_atomically(&path, "{ not json");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(accepted(&app, &new, &org).await);
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_when_a_token_names_a_new_key() {
    let first = Signer::new(Algorithm::RS256, "k1");
    let second = Signer::new(Algorithm::ES256, "k2");
    // The issuer's JWKS endpoint, counting its fetches.
    let document = Arc::new(Mutex::new(jwks(&[&first])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let router = {
        let (document, fetches) = (document.clone(), fetches.clone());
        axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                let body = document.lock().unwrap().clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = TestApp::spawn_with(|config| config.jwt = jwt_config(None, &url)).await;
    let org = authenticate_token(&mut app.client().await, &app.admin_token, &[]).await.unwrap().org_id;
    assert!(accepted(&app, &first, &org).await);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once, at start");

    // Tokens naming unknown keys cannot make apikeys hammer the issuer.
    for i in 0..20 {
        assert!(!accepted(&app, &Signer::new(Algorithm::ES256, &format!("junk-{i}")), &org).await);
    }
    assert!(fetches.load(Ordering::SeqCst) <= 2, "{} fetches", fetches.load(Ordering::SeqCst));

    // The issuer rotates in a new key: the first token naming it causes a fetch (within the
    // refetch interval) and is accepted.
    *document.lock().unwrap() = jwks(&[&first, &second]);
    let waited = std::time::Instant::now();
    eventually("the new key is fetched", apikeys::auth::jwt::MIN_REFETCH_INTERVAL + Duration::from_secs(3), || {
        accepted(&app, &second, &org)
    })
    .await;
    assert!(waited.elapsed() <= apikeys::auth::jwt::MIN_REFETCH_INTERVAL + Duration::from_secs(3));
    assert!(accepted(&app, &first, &org).await);
}

#[tokio::test]
async fn an_unreachable_jwks_url_does_not_stop_the_server() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let app = TestApp::spawn_with(|config| config.jwt = jwt_config(None, &url)).await;
    let org = authenticate_token(&mut app.client().await, &app.admin_token, &[]).await.unwrap().org_id;
    let signer = Signer::new(Algorithm::ES256, "k1");
    assert!(!accepted(&app, &signer, &org).await, "no keys: refused");
    // API keys work as ever.
    app.admin().await.list(pb::ListApiKeysRequest::default()).await.unwrap();
}

#[tokio::test]
async fn a_watch_opened_with_a_jwt_ends_when_the_jwt_expires() {
    let signer = Signer::new(Algorithm::ES256, "ec-1");
    let (app, _dir, org) = platform(&[&signer]).await;
    let mut claims = person("ada", "Ada", &org, &["api_keys_admin"]);
    claims["exp"] = json!(now() + 2);
    let ada = app.client_as(&signer.sign(&claims)).await;
    let mut stream = ada
        .inner
        .clone()
        .watch_audit_events(ada.req(pb::WatchAuditEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // The stream is checked every 5 s: it ends within that of the expiry, with UNAUTHENTICATED.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends once the JWT has expired");
    assert_eq!(ended.map(|s| s.code()), Some(Code::Unauthenticated));
    assert!(now() >= claims["exp"].as_i64().unwrap(), "not before the expiry");
}
