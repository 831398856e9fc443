//! What several benchmarks share: a fresh database per run, PostgreSQL when
//! `APIKEYS_BENCH_DATABASE_URL` names a server (created here, dropped by [`drop_database`]),
//! else the SQLite file of the server's data directory.

use sea_orm::{ConnectionTrait as _, Database};

/// A fresh PostgreSQL database named after `label` if `APIKEYS_BENCH_DATABASE_URL` is set: its URL,
/// and what [`drop_database`] needs; `(None, None)` for SQLite.
pub async fn database(label: &str) -> (Option<String>, Option<(String, String)>) {
    match std::env::var("APIKEYS_BENCH_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!("apikeys_{label}_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&admin_url).await.expect("PostgreSQL reachable");
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
            let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
            (Some(format!("{base}/{name}")), Some((admin_url, name)))
        }
        _ => (None, None),
    }
}

/// Drops what [`database`] created.
pub async fn drop_database(created: Option<(String, String)>) {
    if let Some((admin_url, name)) = created
        && let Ok(admin) = Database::connect(&admin_url).await
    {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
}
