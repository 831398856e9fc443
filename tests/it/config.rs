//! Configuration through the real binary: flags > environment > TOML file > defaults, unknown keys
//! rejected by name, and `apikeys config` hiding the database password.

use crate::harness::*;

#[tokio::test]
async fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apikeys.toml");
    std::fs::write(
        &file,
        r#"
listen = "0.0.0.0:6000"
database_url = "postgres://apikeys:hunter2@db.internal/apikeys"
bootstrap_org = "from-file"
hash_queue = 5
db_max_connections = 3
metrics_listen = "127.0.0.1:9100"
log_format = "json"
"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let env = [("APIKEYS_CONFIG", file.as_str()), ("APIKEYS_HASH_QUEUE", "7"), ("APIKEYS_BOOTSTRAP_ORG", "from-env")];
    let run = apikeys_env(&["config", "--format", "json", "--bootstrap-org", "from-flag"], &env).await.ok();
    let shown = run.json();
    let (config, sources) = (&shown["config"], &shown["sources"]);
    assert_eq!(config["bootstrap_org"], "from-flag", "a flag beats env and file");
    assert_eq!(config["hash_queue"], 7, "env beats file");
    assert_eq!(config["db_max_connections"], 3, "file beats default");
    assert_eq!(config["listen"], "0.0.0.0:6000");
    assert_eq!(config["metrics_listen"], "127.0.0.1:9100");
    assert_eq!(config["log_format"], "json");
    assert_eq!(config["auth_cache_ttl_secs"], 60, "default");
    assert_eq!(config["database_url"], "postgres://apikeys:<redacted>@db.internal/apikeys");
    assert!(!run.stdout.contains("hunter2"));
    assert_eq!(config["transport"]["max_concurrent_streams"], 256, "the [transport] defaults are shown");
    assert_eq!(config["transport"]["max_request_bytes"], 65536);
    // Where each value came from.
    assert_eq!(sources["bootstrap_org"], "flag --bootstrap-org");
    assert_eq!(sources["hash_queue"], "environment APIKEYS_HASH_QUEUE");
    assert_eq!(sources["db_max_connections"], format!("file {file}"));
    assert_eq!(sources["auth_cache_ttl_secs"], "default");

    // Every password form is hidden, in `apikeys config` and in the server's log (issue 7.10).
    let url = "postgres://apikeys@127.0.0.1:1/apikeys?password=hunter3&sslpassword=hunter4";
    let shown = apikeys_env(&["config", "--format", "json"], &[("APIKEYS_DATABASE_URL", url)]).await.ok();
    assert!(!shown.stdout.contains("hunter3") && !shown.stdout.contains("hunter4"), "{}", shown.stdout);
    assert!(shown.stdout.contains("password=<redacted>"), "{}", shown.stdout);
    let data_dir = dir.path().join("data").display().to_string();
    let failed =
        apikeys_env(&["serve", "--data-dir", &data_dir, "--log-level", "trace"], &[("APIKEYS_DATABASE_URL", url)])
            .await;
    assert!(!failed.success, "nothing listens on port 1");
    assert!(failed.stderr.contains("password=<redacted>"), "{}", failed.stderr);
    assert!(!failed.stderr.contains("hunter3") && !failed.stderr.contains("hunter4"), "{}", failed.stderr);

    // The TOML output is itself a valid config file.
    let toml_out = apikeys_env(&["config"], &env).await.ok().stdout;
    let round_trip = dir.path().join("effective.toml");
    std::fs::write(&round_trip, &toml_out).unwrap();
    let again = apikeys(&["config", "--format", "json", "--config", &round_trip.display().to_string()]).await.ok();
    assert_eq!(again.json()["config"]["hash_queue"], 7);
    assert!(toml_out.contains("hash_queue = 7  # environment APIKEYS_HASH_QUEUE"), "{toml_out}");

    // Tables too: a flag and a variable for every key of [transport].
    let env = [("APIKEYS_TRANSPORT__REQUEST_TIMEOUT_SECS", "9")];
    let nested = apikeys_env(&["config", "--format", "json", "--transport-max-request-bytes", "4096"], &env).await.ok();
    let nested = nested.json();
    assert_eq!(nested["config"]["transport"]["max_request_bytes"], 4096);
    assert_eq!(nested["config"]["transport"]["request_timeout_secs"], 9);
    assert_eq!(
        nested["sources"]["transport.request_timeout_secs"],
        "environment APIKEYS_TRANSPORT__REQUEST_TIMEOUT_SECS"
    );
    // A value of the wrong type names where it came from.
    apikeys_env(&["config"], &[("APIKEYS_HASH_QUEUE", "lots")]).await.fails_with("APIKEYS_HASH_QUEUE");
}

#[tokio::test]
async fn unknown_keys_in_the_file_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apikeys.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nhash_queu = 5\n").unwrap();
    let file = file.display().to_string();
    let run = apikeys(&["config", "--config", &file]).await.fails_with("hash_queu");
    assert!(run.stderr.contains(&file), "names the file: {}", run.stderr);
    let data_dir = dir.path().join("data").display().to_string();
    apikeys(&["serve", "--config", &file, "--data-dir", &data_dir]).await.fails_with("hash_queu");
    assert!(!dir.path().join("data").exists(), "nothing started");
}
