//! Test harness: a real apikeys server on 127.0.0.1:0 over a real database, and real tonic clients.
//!
//! The backend is SQLite (a fresh file per test) unless `APIKEYS_TEST_DATABASE_URL` names a
//! PostgreSQL server, in which case every test gets its own freshly created database, dropped when
//! the test ends (even when it fails). The same tests run on both.

use std::{sync::Arc, time::Duration};

use apikeys::{
    auth::{Credential, hashing::HashingConfig, local::LocalAuthenticator},
    config::ServerConfig,
    keys::Keys,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    revocation::ChangeFeed,
    server::{self, Application},
    store::Store,
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use tonic_types::StatusExt;

/// The environment variable that switches the suite to PostgreSQL.
pub const PG_ENV: &str = "APIKEYS_TEST_DATABASE_URL";

/// Cheap argon2 parameters so the suite runs fast; production defaults are tested separately.
pub fn fast_hashing() -> HashingConfig {
    HashingConfig { memory_kib: 64, iterations: 1, parallelism: 1, ..HashingConfig::default() }
}

/// A PostgreSQL database created for one test and dropped afterwards.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("apikeys_t_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV}={admin_url} is set but PostgreSQL is unreachable: {e}"));
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        admin.close().await.unwrap();
        let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
        Self { admin_url: admin_url.to_owned(), url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside or outside a runtime, possibly while panicking: use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// Where a test's data lives.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = match std::env::var(PG_ENV) {
            Ok(url) if !url.is_empty() => Some(PgDatabase::create(&url).await),
            _ => None,
        };
        Self { dir, pg }
    }

    /// A server configuration over this database.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            database_url: self.pg.as_ref().map(|pg| pg.url.as_str().into()),
            ..Self::config_for(&self.dir.path().join("data"))
        }
    }

    /// The test configuration of a server keeping its data (SQLite) in `data_dir`.
    pub fn config_for(data_dir: &std::path::Path) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: None,
            data_dir: data_dir.to_owned(),
            argon2_memory_kib: fast_hashing().memory_kib,
            argon2_iterations: fast_hashing().iterations,
            argon2_parallelism: fast_hashing().parallelism,
            health_interval_ms: 200,
            failure_flush_ms: 100,
            shutdown_grace_secs: 2,
            console_listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        }
    }
}

/// A running apikeys.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The metrics listener, when `metrics_listen` was configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The admin console, when it is on (as in the test configuration).
    pub console_addr: Option<std::net::SocketAddr>,
    pub admin_token: String,
    pub store: Store,
    pub authenticator: Arc<LocalAuthenticator>,
    pub keys: Arc<Keys>,
    pub feed: Arc<ChangeFeed>,
    pub usage: Arc<apikeys::usage::UsageLog>,
    pub config: ServerConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub db: TestDb,
}

impl TestApp {
    /// A server with the test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let db = TestDb::new().await;
        let mut config = db.config();
        adjust(&mut config);
        Self::start(db, config).await
    }

    /// Starts a server over an existing test database.
    pub async fn start(db: TestDb, config: ServerConfig) -> Self {
        let app = Application::build(config.clone()).await.expect("server starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let console_addr = app.console_addr();
        let store = app.store().clone();
        let authenticator = app.authenticator().clone();
        let keys = app.keys().clone();
        let feed = app.feed().clone();
        let usage = app.usage();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let token_path = config.bootstrap_token_path();
        let admin_token = std::fs::read_to_string(&token_path).unwrap_or_default().trim().to_owned();
        Self {
            addr,
            metrics_addr,
            console_addr,
            admin_token,
            store,
            authenticator,
            keys,
            feed,
            usage,
            config,
            shutdown: Some(tx),
            task: Some(task),
            db,
        }
    }

    /// Another replica over the same database (the same SQLite file, or the same PostgreSQL
    /// database), listening on a port of its own. The database stays owned by `self`.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(self.config.clone()).await
    }

    /// A replica with its own configuration (over this database).
    pub async fn replica_with(&self, config: ServerConfig) -> TestApp {
        let scratch = TestDb { dir: tempfile::tempdir().unwrap(), pg: None };
        Self::start(scratch, ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..config }).await
    }

    /// Stops the server and waits for it, keeping the database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        std::mem::replace(&mut self.db, TestDb { dir: tempfile::tempdir().unwrap(), pg: None })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    pub async fn client(&self) -> ApiKeyServiceClient<Channel> {
        ApiKeyServiceClient::new(self.channel().await)
    }

    /// A client that sends `authorization: Bearer <token>` on every call.
    pub async fn client_as(&self, token: &str) -> Client {
        Client { inner: self.client().await, authorization: format!("Bearer {token}") }
    }

    pub async fn admin(&self) -> Client {
        self.client_as(&self.admin_token).await
    }

    /// Creates another org with its administrator (as `apikeys bootstrap` does) and returns its token.
    pub async fn create_org(&self, name: &str) -> String {
        let (keys, _, _) = server::components(&self.config, self.store.clone(), None).await.unwrap();
        let (_, issued) = keys.create_org_admin(name, "default", |_| Ok(())).await.unwrap();
        issued.credential.token()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A tonic client with credentials attached.
#[derive(Clone)]
pub struct Client {
    pub inner: ApiKeyServiceClient<Channel>,
    pub authorization: String,
}

impl Client {
    /// Connects to the server at `url`, sending `authorization` (a whole header value) with each call.
    pub async fn connect(url: &str, authorization: &str) -> Self {
        let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
        Self { inner: ApiKeyServiceClient::new(channel), authorization: authorization.to_owned() }
    }

    /// [`Client::connect`] with the bearer `token`.
    pub async fn bearer(url: &str, token: &str) -> Self {
        Self::connect(url, &format!("Bearer {token}")).await
    }

    pub fn req<T>(&self, message: T) -> Request<T> {
        authed(message, &self.authorization)
    }

    pub async fn create(&self, name: &str, permissions: &[&str]) -> Result<pb::CreateApiKeyResponse, Status> {
        let request = pb::CreateApiKeyRequest {
            display_name: name.to_owned(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        };
        self.inner.clone().create_api_key(self.req(request)).await.map(tonic::Response::into_inner)
    }

    pub async fn create_full(&self, request: pb::CreateApiKeyRequest) -> Result<pb::CreateApiKeyResponse, Status> {
        self.inner.clone().create_api_key(self.req(request)).await.map(tonic::Response::into_inner)
    }

    /// Creates a key owned by installed app `app_id`.
    pub async fn create_for_app(
        &self,
        name: &str,
        permissions: &[&str],
        app_id: &str,
    ) -> Result<pb::CreateApiKeyResponse, Status> {
        self.create_full(pb::CreateApiKeyRequest {
            display_name: name.to_owned(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            app_id: app_id.to_owned(),
            ..Default::default()
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<pb::ApiKey, Status> {
        let response = self.inner.clone().get_api_key(self.req(pb::GetApiKeyRequest { id: id.to_owned() })).await?;
        Ok(response.into_inner().api_key.unwrap())
    }

    pub async fn list(&self, request: pb::ListApiKeysRequest) -> Result<pb::ListApiKeysResponse, Status> {
        self.inner.clone().list_api_keys(self.req(request)).await.map(tonic::Response::into_inner)
    }

    pub async fn update(&self, request: pb::UpdateApiKeyRequest) -> Result<pb::ApiKey, Status> {
        let response = self.inner.clone().update_api_key(self.req(request)).await?;
        Ok(response.into_inner().api_key.unwrap())
    }

    pub async fn regenerate(
        &self,
        id: &str,
        etag: &str,
        ack: bool,
    ) -> Result<pb::RegenerateApiKeySecretResponse, Status> {
        let request = pb::RegenerateApiKeySecretRequest {
            id: id.to_owned(),
            etag: etag.to_owned(),
            acknowledge_app_impact: ack,
            ..Default::default()
        };
        self.inner.clone().regenerate_api_key_secret(self.req(request)).await.map(tonic::Response::into_inner)
    }

    /// Deletes (softly); returns the key as deleted.
    pub async fn delete(&self, id: &str, etag: &str, ack: bool) -> Result<pb::ApiKey, Status> {
        let request = pb::DeleteApiKeyRequest { id: id.to_owned(), etag: etag.to_owned(), acknowledge_app_impact: ack };
        self.inner.clone().delete_api_key(self.req(request)).await.map(|r| r.into_inner().api_key.unwrap_or_default())
    }

    pub async fn undelete(&self, id: &str, etag: &str) -> Result<pb::ApiKey, Status> {
        let request = pb::UndeleteApiKeyRequest { id: id.to_owned(), etag: etag.to_owned() };
        self.inner.clone().undelete_api_key(self.req(request)).await.map(|r| r.into_inner().api_key.unwrap_or_default())
    }
}

/// `message` with `authorization: <value>` metadata.
pub fn authed<T>(message: T, authorization: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(authorization).unwrap());
    request
}

/// Authenticate with a token, no required permissions.
pub async fn authenticate_token(
    client: &mut ApiKeyServiceClient<Channel>,
    token: &str,
    required: &[&str],
) -> Result<pb::Principal, Status> {
    let request = pb::AuthenticateRequest {
        token: token.to_owned(),
        required_permissions: required.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    };
    Ok(client.authenticate(request).await?.into_inner().principal.unwrap())
}

/// Asserts the code and the AIP-193 reason of an error.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo attached");
    assert_eq!(info.reason, reason, "unexpected reason in {status:?}");
    assert_eq!(info.domain, "apikeys");
    status
}

/// The fields named by the BadRequest details of an error.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The credential inside a token.
pub fn credential(token: &str) -> Credential {
    Credential::from_token(token).unwrap()
}

/// What a run of the real `apikeys` binary printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics (showing the output) unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success, "apikeys failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the run failed with `needle` in its error output.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert!(!self.success, "apikeys succeeded unexpectedly:\n{}", self.stdout);
        assert!(self.stderr.contains(needle), "expected {needle:?} in stderr: {}", self.stderr);
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Polls `check` every 10 ms until it returns true; panics naming `what` if it does not within
/// `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the real binary with `args` and only the environment variables in `env` (plus PATH).
pub async fn apikeys_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_apikeys"));
    command.env_clear().args(args).envs(env.iter().copied()).kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("apikeys finished within a minute")
        .expect("apikeys runs");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the real binary with `args` in a clean environment.
pub async fn apikeys(args: &[&str]) -> Run {
    apikeys_env(args, &[]).await
}

impl TestApp {
    /// Writes the admin token to a file in the test's directory and returns its path.
    pub fn admin_token_file(&self) -> String {
        let path = self.db.dir.path().join("admin-token");
        std::fs::write(&path, &self.admin_token).unwrap();
        path.display().to_string()
    }

    /// Runs `apikeys key <args>` against this server as its administrator.
    pub async fn key_cli(&self, args: &[&str]) -> Run {
        let (server, token_file) = (self.url(), self.admin_token_file());
        let mut all = vec!["key", "--server", &server, "--token-file", &token_file];
        all.extend_from_slice(args);
        apikeys(&all).await
    }
}

/// The real `apikeys serve` binary on `127.0.0.1:0` over a test database, with cheap hashing. Its
/// output goes to files (not pipes, which trace logs would fill and block); its address is read
/// from its own "apikeys listening" log line, so no port is guessed.
pub struct Binary {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// The metrics listener, when started with `--metrics-listen`.
    pub metrics: Option<std::net::SocketAddr>,
    logs: [std::path::PathBuf; 2],
}

impl Binary {
    /// Starts it with `extra` flags and waits until it listens and has bootstrapped.
    pub async fn serve(db: &TestDb, extra: &[&str]) -> Self {
        Self::serve_env(db, extra, &[]).await
    }

    /// [`Binary::serve`] with environment variables `env` set (and text logs unless `extra` says
    /// `--log-format`).
    pub async fn serve_env(db: &TestDb, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::serve_wrapped(db, extra, env, &[]).await
    }

    /// [`Binary::serve_env`] run through `wrapper` (a program and its arguments, which end by
    /// running the command after them: `setpriv ... --`), if not empty.
    pub async fn serve_wrapped(db: &TestDb, extra: &[&str], env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let data_dir = db.dir.path().join("data");
        // Several servers may share one test database (replicas): each logs to files of its own.
        let run = uuid::Uuid::new_v4().simple();
        let logs = [db.dir.path().join(format!("stdout-{run}.log")), db.dir.path().join(format!("stderr-{run}.log"))];
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_apikeys"));
                command
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_apikeys")),
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--log-format") { &[][..] } else { &["--log-format", "text"][..] })
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args(extra)
            .env_remove("APIKEYS_DATABASE_URL")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::from(std::fs::File::create(&logs[0]).unwrap()))
            .stderr(std::process::Stdio::from(std::fs::File::create(&logs[1]).unwrap()));
        if let Some(pg) = &db.pg {
            command.args(["--database-url", &pg.url]);
        }
        // Owned from here on, so a failed start is still killed and reaped (Drop).
        let mut server = Self { child: command.spawn().unwrap(), addr: ([0, 0, 0, 0], 0).into(), metrics: None, logs };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&server.logs[1]).unwrap_or_default();
            // `addr=127.0.0.1:1234` in text, `"addr":"127.0.0.1:1234"` in JSON.
            let listening = text.lines().find(|l| l.contains("apikeys listening")).and_then(|line| {
                let at = line
                    .find("addr=")
                    .map(|at| at + "addr=".len())
                    .or_else(|| line.find("\"addr\":").map(|at| at + "\"addr\":".len()))?;
                line[at..].split([' ', ',', '}']).next()?.trim_matches('"').parse().ok()
            });
            if let Some(addr) = listening {
                server.addr = addr;
                server.metrics = text.lines().find_map(|line| {
                    let at = line.find("metrics at http://")? + "metrics at http://".len();
                    line[at..].split('/').next()?.parse().ok()
                });
                return server;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: gone at once, like a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, a clean exit, and everything it printed.
    pub fn terminate(&mut self) -> String {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "clean exit on SIGTERM: {status:?}");
        self.logs.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to completion (a tool a test needs: pip, tar, python) and returns its stdout;
/// panics with both outputs, saying `what` failed, unless it succeeded.
#[track_caller]
pub fn run(command: &mut std::process::Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
