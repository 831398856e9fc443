//! The `apikeys` command line: `serve`, and the offline `migrate` and `bootstrap` that work straight
//! on the database. Every flag has an `APIKEYS_*` environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    auth::hashing::HashingConfig,
    config::ServerConfig,
    server::{self, Application, StartupError},
    telemetry::{self, LogFormat},
};

/// apikeys: issues and validates API key accounts over gRPC.
#[derive(Debug, Parser)]
#[command(name = "apikeys", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "APIKEYS_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log level or filter (e.g. `debug`, `apikeys=debug,info`); overrides RUST_LOG.
    #[arg(long, env = "APIKEYS_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (migrates, and on first start bootstraps the first administrator).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(StorageArgs),
    /// Create an organization with its first administrator key, offline, and print the token once.
    ///
    /// Example: apikeys bootstrap --org acme
    Bootstrap(BootstrapArgs),
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Database URL (`sqlite://...` or `postgres://...`); default: SQLite file in the data directory.
    #[arg(long, env = "APIKEYS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite file and the bootstrap token.
    #[arg(long, env = "APIKEYS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Replace the built-in permission catalog with this TOML file.
    #[arg(long, env = "APIKEYS_PERMISSIONS_FILE")]
    pub permissions_file: Option<PathBuf>,
    /// argon2id memory cost in KiB.
    #[arg(long, env = "APIKEYS_ARGON2_MEMORY_KIB", default_value_t = 19456)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    #[arg(long, env = "APIKEYS_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "APIKEYS_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
}

/// `apikeys serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "APIKEYS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Name of the org created on first start.
    #[arg(long, env = "APIKEYS_BOOTSTRAP_ORG", default_value = "default")]
    pub bootstrap_org: String,
    /// Where the first administrator's token is written on first start [default: <data-dir>/bootstrap-token].
    #[arg(long, env = "APIKEYS_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Database pool size.
    #[arg(long, env = "APIKEYS_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
    /// argon2 computations at once [default: number of cores].
    #[arg(long, env = "APIKEYS_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Credential checks allowed to wait for argon2; beyond that RESOURCE_EXHAUSTED.
    #[arg(long, env = "APIKEYS_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
    /// Seconds a successful verification is cached (0 disables the cache).
    #[arg(long, env = "APIKEYS_AUTH_CACHE_TTL_SECS", default_value_t = 60)]
    pub auth_cache_ttl_secs: u64,
    /// Most cached verifications.
    #[arg(long, env = "APIKEYS_AUTH_CACHE_CAPACITY", default_value_t = 10_000)]
    pub auth_cache_capacity: usize,
    /// Seconds in-flight RPCs get to finish on shutdown.
    #[arg(long, env = "APIKEYS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

/// `apikeys bootstrap`.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Name of the organization to create.
    #[arg(long)]
    pub org: String,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
}

impl StorageArgs {
    fn apply(&self, config: &mut ServerConfig) {
        config.database_url.clone_from(&self.database_url);
        config.data_dir.clone_from(&self.data_dir);
        config.permissions_file.clone_from(&self.permissions_file);
        config.hashing.memory_kib = self.argon2_memory_kib;
        config.hashing.iterations = self.argon2_iterations;
        config.hashing.parallelism = self.argon2_parallelism;
    }

    fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        self.apply(&mut config);
        config
    }
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig { listen: self.listen, ..ServerConfig::default() };
        self.storage.apply(&mut config);
        config.bootstrap_org.clone_from(&self.bootstrap_org);
        config.bootstrap_token_file.clone_from(&self.bootstrap_token_file);
        config.db_max_connections = self.db_max_connections;
        config.hashing = HashingConfig {
            max_concurrent: self.hash_concurrency.unwrap_or(config.hashing.max_concurrent),
            max_waiting: self.hash_queue,
            ..config.hashing
        };
        config.auth_cache_ttl = Duration::from_secs(self.auth_cache_ttl_secs);
        config.auth_cache_capacity = self.auth_cache_capacity;
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        config
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, as a message for the operator.
pub async fn run(cli: Cli) -> Result<(), StartupError> {
    telemetry::init(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::Serve(args) => {
            let app = Application::build(args.config()).await?;
            app.run(shutdown_signal()).await
        }
        Command::Migrate(args) => {
            server::open_store(&args.config()).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bootstrap(args) => {
            let config = args.storage.config();
            let store = server::open_store(&config).await?;
            let (keys, _) = server::components(&config, store)?;
            let (org, issued) = keys.create_org_admin(&args.org, "default", |_| Ok(())).await?;
            println!("Created org {:?} ({}) with administrator key {}.", org.name, org.id, issued.key.id);
            println!("Token (shown once; it cannot be retrieved again):");
            println!("{}", issued.credential.token());
            Ok(())
        }
    }
}
