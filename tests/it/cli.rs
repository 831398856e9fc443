//! The admin CLI, through the real binary against a real server: every `key` subcommand in table and
//! JSON form, `authenticate`, `permissions`, `health`, and the exit status and message of failures.

use apikeys::pb;
use serde_json::Value;

use crate::harness::*;

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn key_create_prints_the_secret_once_as_a_table_or_json() {
    let app = TestApp::spawn().await;
    let run = app.key_cli(&["create", "--name", "CI deployer", "--permission", "read_data"]).await.ok();
    assert!(run.stdout.contains("Created API key \"CI deployer\"."), "{}", run.stdout);
    assert!(run.stdout.contains("cannot be retrieved again"), "{}", run.stdout);
    let field = |name: &str| {
        let line = run.stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {}", run.stdout));
        line[name.len()..].trim().to_owned()
    };
    let token = field("Token");
    assert!(token.starts_with("apk_"));
    let principal = authenticate_token(&mut app.client().await, &token, &["read_data"]).await.unwrap();
    assert_eq!(principal.key_id, field("ID"));
    assert_eq!(field("Permissions"), "read_data");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apikey_permissions.txt");
    std::fs::write(&file, "# what the status page needs\nread_data\n\nread_playbook # runbooks\n").unwrap();
    let run = app
        .key_cli(&[
            "create",
            "--name",
            "Status page",
            "--description",
            "shows incidents",
            "--app",
            "statuspage",
            "--permissions-file",
            &file.display().to_string(),
            "--output",
            "json",
        ])
        .await
        .ok();
    assert!(run.stderr.contains("cannot be retrieved again"), "the warning goes to stderr: {}", run.stderr);
    let created = run.json();
    let key = &created["api_key"];
    assert_eq!(key["display_name"], "Status page");
    assert_eq!(key["description"], "shows incidents");
    assert_eq!(key["app_id"], "statuspage");
    assert_eq!(strings(&key["permissions"]), ["read_data", "read_playbook"]);
    assert_eq!(key["created_by"]["type"], "api_key");
    assert!(key["create_time"].as_str().unwrap().ends_with('Z'));
    assert!(!key["etag"].as_str().unwrap().is_empty());
    let secret = created["secret"].as_str().unwrap();
    let mut client = app.client().await;
    let request = pb::AuthenticateRequest {
        key_id: key["id"].as_str().unwrap().to_owned(),
        secret: secret.to_owned(),
        ..Default::default()
    };
    client.authenticate(request).await.unwrap();
    authenticate_token(&mut client, created["token"].as_str().unwrap(), &[]).await.unwrap();
}

#[tokio::test]
async fn key_list_pages_through_everything_and_filters() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // The server's default page is 50 keys: 55 keys (and the admin) need two pages.
    let creates = (0..55).map(|i| {
        let admin = admin.clone();
        async move {
            let permissions: &[&str] = if i % 5 == 0 { &["read_data"] } else { &[] };
            admin.create(&format!("bulk {i:02}"), permissions).await.unwrap()
        }
    });
    futures::future::join_all(creates).await;

    let all = app.key_cli(&["list", "--output", "json"]).await.ok().json();
    let names: Vec<_> = all["api_keys"].as_array().unwrap().iter().map(|k| k["display_name"].clone()).collect();
    assert_eq!(names.len(), 56, "every page was fetched");
    assert_eq!(all["next_page_token"], "");

    let table = app.key_cli(&["list"]).await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 57, "a header and one line per key");
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("PERMISSIONS"));
    let name_column = lines[0].find("NAME").unwrap();
    assert!(lines[1..].iter().all(|l| l.get(name_column - 2..name_column) == Some("  ")), "aligned:\n{table}");

    let page = app.key_cli(&["list", "--page-size", "2", "--output", "json"]).await.ok().json();
    assert_eq!(page["api_keys"].as_array().unwrap().len(), 2);
    let token = page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let next = app.key_cli(&["list", "--page-size", "2", "--page-token", token, "--output", "json"]).await.ok().json();
    assert_ne!(next["api_keys"][0]["id"], page["api_keys"][0]["id"]);

    let filtered =
        app.key_cli(&["list", "--permission", "read_data", "--name-contains", "BULK 1", "--output", "json"]).await;
    let keys = filtered.ok().json()["api_keys"].as_array().unwrap().clone();
    let names: Vec<_> = keys.iter().map(|k| k["display_name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["bulk 10", "bulk 15"]);
}

#[tokio::test]
async fn key_get_update_regenerate_and_delete() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create("Worker", &["read_data", "read_playbook"]).await.unwrap();
    let id = created.api_key.unwrap().id;

    let shown = app.key_cli(&["get", &id]).await.ok().stdout;
    assert!(shown.contains("Worker") && shown.contains("read_data, read_playbook"), "{shown}");
    let json = app.key_cli(&["get", &id, "--output", "json"]).await.ok().json();
    assert_eq!(json["id"], id.as_str());

    let updated = app
        .key_cli(&[
            "update",
            &id,
            "--add-permission",
            "edit_data",
            "--remove-permission",
            "read_playbook",
            "--description",
            "nightly jobs",
            "--output",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(strings(&updated["permissions"]), ["edit_data", "read_data"]);
    assert_eq!(updated["description"], "nightly jobs");
    assert_eq!(updated["display_name"], "Worker", "fields not named stay");
    let replaced = app.key_cli(&["update", &id, "--set-permissions", "read_function", "-o", "json"]).await;
    assert_eq!(strings(&replaced.ok().json()["permissions"]), ["read_function"]);
    app.key_cli(&["update", &id, "--etag", "\"999\"", "--name", "Stale"]).await.fails_with("ABORTED");

    let regenerated = app.key_cli(&["regenerate", &id, "--output", "json"]).await.ok().json();
    assert_eq!(regenerated["api_key"]["id"], id.as_str());
    let mut client = app.client().await;
    authenticate_token(&mut client, regenerated["token"].as_str().unwrap(), &[]).await.unwrap();
    assert!(authenticate_token(&mut client, &created.token, &[]).await.is_err(), "the old secret stopped working");

    let deleted = app.key_cli(&["delete", &id]).await.ok();
    assert!(deleted.stdout.contains(&format!("apikeys key undelete {id}")), "{}", deleted.stdout);
    let listed = app.key_cli(&["list", "--state", "deleted", "--output", "json"]).await.ok().json();
    let ids: Vec<&str> = listed["api_keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    app.key_cli(&["update", &id, "--name", "Zombie"]).await.fails_with("API_KEY_DELETED");
    let restored = app.key_cli(&["undelete", &id, "--output", "json"]).await.ok().json();
    assert_eq!(restored["state"], "ACTIVE");
    assert!(restored["purge_time"].is_null(), "{restored}");
    authenticate_token(&mut client, regenerated["token"].as_str().unwrap(), &[])
        .await
        .expect("same secret after undelete");
    app.key_cli(&["undelete", &id]).await.fails_with("API_KEY_NOT_DELETED");
}

#[tokio::test]
async fn app_managed_keys_need_acknowledgement() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create_for_app("Slack app", &["read_data"], "slack").await.unwrap();
    let id = created.api_key.unwrap().id;
    app.key_cli(&["update", &id, "--add-permission", "edit_data"]).await.fails_with("FAILED_PRECONDITION");
    app.key_cli(&["update", &id, "--add-permission", "edit_data", "--acknowledge-app-impact"]).await.ok();
    app.key_cli(&["delete", &id]).await.fails_with("acknowledge_app_impact");
    app.key_cli(&["delete", &id, "--acknowledge-app-impact"]).await.ok();
}

#[tokio::test]
async fn authenticate_permissions_and_health() {
    let app = TestApp::spawn().await;
    let created = app.admin().await.create("Checker", &["read_data"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let credential = dir.path().join("token");
    std::fs::write(&credential, format!("{}\n", created.token)).unwrap();
    let (server, credential) = (app.url(), credential.display().to_string());

    let shown = apikeys(&["authenticate", "--server", &server, "--credential-file", &credential]).await.ok().stdout;
    assert!(shown.contains(&created.api_key.unwrap().id), "{shown}");
    assert!(shown.contains("Checker"));
    let json = apikeys_env(
        &["authenticate", "--server", &server, "--require", "read_data", "-o", "json"],
        &[("APIKEYS_CREDENTIAL", &created.token)],
    )
    .await
    .ok()
    .json();
    assert_eq!(json["principal"]["principal_type"], "api_key");
    assert_eq!(json["principal"]["restrictions"]["can_own_incidents"], false);
    let denied =
        apikeys(&["authenticate", "--server", &server, "--credential-file", &credential, "--require", "edit_data"])
            .await
            .fails_with("PERMISSION_DENIED");
    assert!(denied.stderr.contains("edit_data"), "{}", denied.stderr);
    apikeys_env(&["authenticate", "--server", &server], &[("APIKEYS_CREDENTIAL", "apk_nonsense")])
        .await
        .fails_with("UNAUTHENTICATED");

    let catalog = apikeys(&["permissions", "--server", &server, "--output", "json"]).await.ok().json();
    let names: Vec<_> = catalog["permissions"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert!(names.contains(&Value::from("api_keys_admin")), "{names:?}");
    let table = apikeys(&["permissions", "--server", &server]).await.ok().stdout;
    assert!(table.starts_with("CATEGORY") && table.contains("read_data"), "{table}");

    let health = apikeys_env(&["health"], &[("APIKEYS_SERVER", &server)]).await.ok();
    assert_eq!(health.stdout.trim(), "SERVING");
    // With the database gone the server reports NOT_SERVING, and `health` exits non-zero.
    app.store.connection().clone().close().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let run = apikeys(&["health", "--server", &server]).await;
        if !run.success {
            assert_eq!(run.stdout.trim(), "NOT_SERVING");
            run.fails_with("NOT_SERVING");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health never reported the outage");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await;
    apikeys(&["health", "--server", &server, "--timeout-secs", "5"]).await.fails_with("cannot connect");
}

#[tokio::test]
async fn failures_exit_non_zero_with_the_servers_answer() {
    let app = TestApp::spawn().await;
    let server = app.url();
    let bad = apikeys_env(&["key", "list", "--server", &server], &[("APIKEYS_TOKEN", "apk_not_a_real_token")]).await;
    bad.fails_with("UNAUTHENTICATED");
    apikeys(&["key", "list", "--server", &server]).await.fails_with("admin credentials needed");

    app.key_cli(&["create", "--name", "Twin"]).await.ok();
    let duplicate = app.key_cli(&["create", "--name", "twin"]).await.fails_with("ALREADY_EXISTS");
    assert!(duplicate.stderr.contains("DISPLAY_NAME_TAKEN"), "{}", duplicate.stderr);
    let invalid = app.key_cli(&["create", "--name", "  ", "--permission", "no_such_permission"]).await;
    let invalid = invalid.fails_with("INVALID_ARGUMENT");
    assert!(invalid.stderr.contains("\n  display_name: "), "field violations, one per line: {}", invalid.stderr);
    app.key_cli(&["get", "not-a-uuid"]).await.fails_with("INVALID_ARGUMENT");
    assert!(!invalid.stderr.contains(&app.admin_token) && !duplicate.stderr.contains(&app.admin_token));
}

#[tokio::test]
async fn every_subcommand_has_help_with_examples() {
    for command in [
        &["key"][..],
        &["key", "create"],
        &["key", "list"],
        &["key", "get"],
        &["key", "update"],
        &["key", "regenerate"],
        &["key", "delete"],
        &["authenticate"],
        &["permissions"],
        &["health"],
        &["serve"],
        &["config"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = apikeys(&args).await.ok().stdout;
        assert!(help.contains("Example"), "{command:?} --help has examples:\n{help}");
        assert!(help.contains("APIKEYS_"), "{command:?} --help names the environment variables");
    }
}

#[tokio::test]
async fn several_servers_are_balanced_and_a_dead_one_is_skipped() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let token_file = app.admin_token_file();
    // A port with nothing behind it, then two replicas of one database.
    let dead = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let servers = format!("{dead},{},{}", app.url(), replica.url());
    let key = ["key", "--server", &servers, "--token-file", &token_file];
    let created =
        apikeys(&[&key[..], &["create", "--name", "Balanced", "--output", "json"]].concat()).await.ok().json();
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        let got = apikeys(&[&key[..], &["get", &id, "--output", "json"]].concat()).await.ok().json();
        assert_eq!(got["display_name"], "Balanced");
    }
    // None serving: a clear error within the timeout.
    let none = apikeys(&[
        "key",
        "--server",
        &format!("{dead},{dead}"),
        "--token-file",
        &token_file,
        "--timeout-secs",
        "1",
        "list",
    ])
    .await;
    none.fails_with("no apikeys replica is serving");
}

#[tokio::test]
async fn expiry_disable_enable_and_the_lifetime_policy_from_the_cli() {
    let app = TestApp::spawn().await;
    let created =
        app.key_cli(&["create", "--name", "Temp", "--expires-in", "2h", "--output", "json"]).await.ok().json();
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    let expires = created["api_key"]["expire_time"].as_str().expect("an expire time").to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    assert!(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now() - chrono::Duration::hours(2)).num_seconds().abs() < 60
    );

    let disabled = app.key_cli(&["disable", &id, "--output", "json"]).await.ok().json();
    assert_eq!(disabled["state"], "DISABLED");
    let table = app.key_cli(&["get", &id]).await.ok().stdout;
    assert!(table.contains("DISABLED") && table.contains("Expires"), "{table}");
    let enabled = app.key_cli(&["enable", &id, "--output", "json"]).await.ok().json();
    assert_eq!(enabled["state"], "ACTIVE");
    let never = app.key_cli(&["update", &id, "--no-expiry", "--output", "json"]).await.ok().json();
    assert!(never["expire_time"].is_null(), "{never}");

    let rotated = app.key_cli(&["regenerate", &id, "--grace", "1h", "--output", "json"]).await.ok().json();
    assert!(rotated["api_key"]["previous_secret_expire_time"].is_string(), "{rotated}");
    let said = app.key_cli(&["regenerate", &id, "--grace", "1h"]).await.ok();
    assert!(
        said.stdout.contains("keeps working until") || said.stderr.contains("keeps working until"),
        "{}",
        said.stdout
    );

    let policy = app.key_cli(&["policy", "--max-key-lifetime", "90d", "--output", "json"]).await.ok().json();
    assert_eq!(
        (policy["max_key_lifetime_secs"].as_i64(), policy["lockout_threshold"].as_i64()),
        (Some(90 * 86_400), Some(100))
    );
    app.key_cli(&["create", "--name", "Bad", "--expires-in", "fortnight"]).await.fails_with("not a lifetime like 90d");
}
