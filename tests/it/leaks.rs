//! No secret leaks, checked mechanically (issue 14): the real binary, logging at TRACE as JSON with
//! metrics on, creates and regenerates keys and authenticates with Basic and Bearer (right and
//! wrong) through every refusal path; then every secret and token it handled, and their base64
//! forms, are searched for in its logs, its metrics page, every error message and detail it sent,
//! and the database (the SQLite files byte for byte; on PostgreSQL every row of every table).
//! Expected hits: none (the argon2 hashes hold neither).

use std::time::Duration;

use apikeys::{
    auth::{Credential, Secret},
    pb::{self, api_key_service_client::ApiKeyServiceClient},
};
use base64::Engine as _;
use sea_orm::{ConnectionTrait as _, Database, Statement};
use tonic::{Status, transport::Channel};

use crate::harness::*;

/// What must never appear: everything that presents or derives from the credential.
fn forms(credential: &Credential, needles: &mut Vec<String>) {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let url = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (secret, token) = (credential.secret.expose_text(), credential.token());
    let bytes = credential.secret.expose_bytes();
    let basic = credential.basic();
    needles.extend([
        secret.clone(),
        token.clone(),
        basic.trim_start_matches("Basic ").to_owned(),
        b64.encode(bytes),
        url.encode(bytes),
        b64.encode(&secret),
        b64.encode(&token),
        url.encode(&token),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ]);
}

/// Everything an error carries to the client.
fn answer(status: &Status) -> String {
    format!("{status:?} {} {}", status.message(), String::from_utf8_lossy(status.details()))
}

#[track_caller]
fn refused(result: Result<(), Status>, answers: &mut Vec<String>) {
    answers.push(answer(&result.expect_err("this call must be refused")));
}

/// Every row of every table of the PostgreSQL database at `url`, as JSON text.
async fn dump_postgres(url: &str) -> String {
    let db = Database::connect(url).await.unwrap();
    let tables = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'public'",
        ))
        .await
        .unwrap();
    let mut dump = String::new();
    for table in tables {
        let name: String = table.try_get("", "name").unwrap();
        let sql = format!("SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') AS rows FROM \"{name}\" t");
        let rows = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
        let rows: String = rows.try_get("", "rows").unwrap();
        assert!(name != "api_key" || rows.contains("argon2id"), "the dump reads the hashes");
        dump.push_str(&rows);
    }
    db.close().await.unwrap();
    dump
}

#[tokio::test]
async fn no_secret_or_token_is_in_logs_metrics_errors_or_the_database() {
    let db = TestDb::new().await;
    let flags = ["--log-format", "json", "--metrics-listen", "127.0.0.1:0"];
    let mut server = Binary::serve_env(&db, &flags, &[("RUST_LOG", "trace")]).await;
    let token_file = db.dir.path().join("data/bootstrap-token");
    let admin_token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    let url = server.url();
    let admin = Client::connect(&url, &format!("Bearer {admin_token}")).await;
    let mut needles = Vec::new();
    forms(&credential(&admin_token), &mut needles);
    let mut answers = Vec::new();

    // Keys: plain, restricted to a network and rate-limited, regenerated with a grace period.
    let plain = admin.create("Leak plain", &["read_data"]).await.unwrap();
    let restricted = admin
        .create_full(pb::CreateApiKeyRequest {
            display_name: "Leak restricted".into(),
            permissions: vec!["read_data".into()],
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            rate_limit: Some(pb::RateLimit {
                requests: 1,
                window: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let rotated = admin.create("Leak rotated", &["read_data"]).await.unwrap();
    let rotated_id = rotated.api_key.as_ref().unwrap().id.clone();
    let regenerated = admin
        .inner
        .clone()
        .regenerate_api_key_secret(admin.req(pb::RegenerateApiKeySecretRequest {
            id: rotated_id.clone(),
            previous_secret_ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut credentials: Vec<Credential> =
        [&plain.token, &restricted.token, &rotated.token, &regenerated.token].iter().map(|t| credential(t)).collect();
    // Wrong secrets are secrets too: a typo of a real one must not be logged either.
    let wrong = Credential { key_id: credentials[0].key_id, secret: Secret::generate().unwrap() };
    let unknown = Credential { key_id: uuid::Uuid::new_v4(), secret: Secret::generate().unwrap() };
    credentials.extend([wrong.clone(), unknown.clone()]);
    for c in &credentials {
        forms(c, &mut needles);
    }

    // Authenticate: both forms, right and wrong, and every refusal after the credential.
    let mut raw = ApiKeyServiceClient::new(Channel::from_shared(url.clone()).unwrap().connect().await.unwrap());
    let by_parts = |c: &Credential| pb::AuthenticateRequest {
        key_id: c.key_id.to_string(),
        secret: c.secret.expose_text(),
        ..Default::default()
    };
    let by_token = |c: &Credential| pb::AuthenticateRequest { token: c.token(), ..Default::default() };
    for c in &credentials[..4] {
        // The restricted key is refused for its network, after its secret was checked.
        if let Err(status) = raw.authenticate(by_parts(c)).await {
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        }
        let _ = raw.authenticate(by_token(c)).await;
    }
    for c in [&wrong, &unknown] {
        refused(raw.authenticate(by_parts(c)).await.map(drop), &mut answers);
        refused(raw.authenticate(by_token(c)).await.map(drop), &mut answers);
    }
    let mut malformed = by_token(&credentials[0]);
    malformed.token.push('x');
    refused(raw.authenticate(malformed).await.map(drop), &mut answers);
    let both = pb::AuthenticateRequest { token: credentials[0].token(), ..by_parts(&credentials[0]) };
    refused(raw.authenticate(both).await.map(drop), &mut answers);
    let mut missing = by_token(&credentials[0]);
    missing.required_permissions = vec!["edit_data".into()];
    refused(raw.authenticate(missing).await.map(drop), &mut answers);
    let mut outside = by_token(&credentials[1]);
    outside.client_address = "192.0.2.1".into();
    refused(raw.authenticate(outside).await.map(drop), &mut answers);
    let mut inside = by_token(&credentials[1]);
    inside.client_address = "10.1.1.1".into();
    let _ = raw.authenticate(inside.clone()).await;
    refused(raw.authenticate(inside).await.map(drop), &mut answers);

    // Admin RPCs with Basic and Bearer, right and wrong, and without the permission.
    let as_basic = Client::connect(&url, &credential(&admin_token).basic()).await;
    as_basic.get(&rotated_id).await.unwrap();
    for authorization in
        [wrong.bearer(), wrong.basic(), unknown.bearer(), format!("Bearer {}x", credentials[0].token())]
    {
        refused(Client::connect(&url, &authorization).await.get(&rotated_id).await.map(drop), &mut answers);
    }
    refused(Client::connect(&url, &credentials[0].bearer()).await.get(&rotated_id).await.map(drop), &mut answers);
    // Validation, conflicts and stale etags.
    refused(admin.create("Leak plain", &["read_data"]).await.map(drop), &mut answers);
    refused(admin.create("", &["no_such_permission"]).await.map(drop), &mut answers);
    refused(admin.regenerate(&rotated_id, "\"999\"", false).await.map(drop), &mut answers);
    refused(admin.get(&uuid::Uuid::new_v4().to_string()).await.map(drop), &mut answers);
    admin.delete(&plain.api_key.as_ref().unwrap().id, "", false).await.unwrap();
    refused(raw.authenticate(by_token(&credentials[0])).await.map(drop), &mut answers);

    let metrics = crate::metrics::scrape(server.metrics.expect("metrics are on")).await;
    assert!(metrics.contains("apikeys_"), "the metrics page was read: {metrics}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.terminate();
    assert!(logs.contains("\"level\":\"TRACE\""), "the server logged at TRACE");
    assert!(logs.lines().count() > 100, "{} log lines", logs.lines().count());

    let mut stored = String::new();
    match &db.pg {
        Some(pg) => stored.push_str(&dump_postgres(&pg.url).await),
        None => {
            for entry in std::fs::read_dir(db.dir.path().join("data")).unwrap() {
                let path = entry.unwrap().path();
                // The bootstrap token is written there on purpose, for the operator to collect.
                if path != token_file {
                    stored.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
                }
            }
            assert!(stored.contains("argon2id"), "the database files were read");
        }
    }

    // The search would see an identifier, so it would see a secret: the key IDs are in both.
    let display_name = "Leak rotated";
    assert!(logs.contains(&rotated_id), "the logs cover the keys");
    assert!(stored.contains(display_name), "the dump covers the keys");
    let places = [("logs", &logs), ("metrics", &metrics), ("errors", &answers.join("\n")), ("database", &stored)];
    let mut hits = Vec::new();
    for needle in &needles {
        assert!(needle.len() >= 32, "a needle too short to be meaningful: {}", needle.len());
        for (place, text) in &places {
            if text.contains(needle.as_str()) {
                hits.push(format!("{place}: {}…", &needle[..8]));
            }
        }
    }
    assert!(answers.len() >= 15, "{} refusals checked", answers.len());
    assert!(hits.is_empty(), "secrets leaked ({} of {} needles):\n{}", hits.len(), needles.len(), hits.join("\n"));
}
