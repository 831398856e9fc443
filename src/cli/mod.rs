//! The `apikeys` command line. One binary:
//!
//! - server side ([`serve`]): `serve`, the offline `migrate` and `bootstrap` that work straight on the
//!   database, and `config`, which prints the effective configuration;
//! - client side, gRPC to a running server through the generated client ([`connection`]): `key ...`
//!   ([`keys`]), `authenticate`, `permissions` and `health` ([`public`]), printing tables or JSON
//!   ([`output`]).
//!
//! Every flag has an `APIKEYS_*` environment variable; server settings can also come from a TOML file.

pub mod audit;
pub mod connection;
pub mod keys;
pub mod output;
pub mod public;
pub mod serve;

use clap::{Parser, Subcommand};

use crate::{
    config::ServerConfig,
    server::{self, Application, StartupError},
    telemetry::{self, LogFormat},
};

/// apikeys: issues and validates API key accounts over gRPC.
#[derive(Debug, Parser)]
#[command(name = "apikeys", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (migrates, and on first start bootstraps the first administrator).
    #[command(after_help = "Every setting is a flag, an APIKEYS_* variable and a key of the --config file; \
`apikeys config` shows the values in effect and where each came from.

Examples:
  apikeys serve
  apikeys serve --config /etc/apikeys.toml --metrics-listen 127.0.0.1:9090
  apikeys serve --listen 0.0.0.0:50051 --tls-cert cert.pem --tls-key key.pem --tls-client-ca clients.pem")]
    Serve(serve::SettingsArgs),
    /// Apply database migrations and exit.
    #[command(after_help = "Example:
  apikeys migrate --database-url postgres://apikeys@db/apikeys")]
    Migrate(serve::SettingsArgs),
    /// Create an organization with its first administrator key, offline, and print the token once.
    #[command(after_help = "Example:
  apikeys bootstrap --org acme")]
    Bootstrap(serve::BootstrapArgs),
    /// Print the configuration `serve` would use (flags > env > file > defaults), secrets redacted,
    /// with where each value came from.
    #[command(after_help = "Examples:
  apikeys config --config /etc/apikeys.toml
  APIKEYS_HASH_QUEUE=128 apikeys config --format json")]
    Config(serve::ConfigArgs),
    /// Manage API keys on a running server (needs an admin token).
    #[command(after_help = "Examples:
  apikeys key --token-file data/bootstrap-token list
  APIKEYS_SERVER=https://apikeys.internal:50051 APIKEYS_CA_CERT=ca.pem APIKEYS_TOKEN_FILE=admin-token \\
    apikeys key create --name deployer --permission read_data")]
    Key(keys::KeyCommand),
    /// Read or follow the audit trail on a running server (needs an admin token).
    #[command(after_help = "Examples:
  apikeys audit --token-file data/bootstrap-token list --key ID
  apikeys audit --token-file data/bootstrap-token watch --output json >> apikeys-audit.jsonl")]
    Audit(audit::AuditCommand),
    /// Check a credential against a running server and show whose it is.
    Authenticate(public::AuthenticateArgs),
    /// List the permission catalog of a running server.
    Permissions(public::PermissionsArgs),
    /// Ask a running server for its health; exit 0 only when it is SERVING.
    Health(public::HealthArgs),
}

/// Loads the settings and starts logging as they say.
fn load_and_log(args: &serve::SettingsArgs) -> Result<ServerConfig, StartupError> {
    let config = args.load()?.config;
    telemetry::init(config.log_format, config.log_level.as_deref());
    Ok(config)
}

/// Client commands log only warnings unless `APIKEYS_LOG_LEVEL` or `RUST_LOG` asks: their output is
/// the point.
fn init_client_logs() {
    let level = std::env::var("APIKEYS_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    telemetry::init(LogFormat::Text, Some(level.as_deref().unwrap_or("warn")));
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, as a message for the operator (for client commands: the server's
/// code and message).
pub async fn run(cli: Cli) -> Result<(), StartupError> {
    match cli.command {
        Command::Serve(args) => {
            let app = Application::build(load_and_log(&args)?).await?;
            app.run(serve::shutdown_signal()).await
        }
        Command::Config(args) => serve::print_config(&args.settings.load()?, args.format),
        Command::Migrate(args) => {
            server::open_store(&load_and_log(&args)?).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bootstrap(args) => {
            let config = load_and_log(&args.settings)?;
            let store = server::open_store(&config).await?;
            let (keys, _, _) = server::components(&config, store, None).await?;
            let (org, issued) = keys.create_org_admin(&args.org, "default", |_| Ok(())).await?;
            println!("Created org {:?} ({}) with administrator key {}.", org.name, org.id, issued.key.id);
            println!("Token (shown once; it cannot be retrieved again):");
            println!("{}", issued.credential.token());
            Ok(())
        }
        Command::Key(command) => {
            init_client_logs();
            keys::run(command).await
        }
        Command::Audit(command) => {
            init_client_logs();
            audit::run(command).await
        }
        Command::Authenticate(args) => {
            init_client_logs();
            public::authenticate(args).await
        }
        Command::Permissions(args) => {
            init_client_logs();
            public::permissions(args).await
        }
        Command::Health(args) => {
            init_client_logs();
            public::health(args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn debug_output_hides_credentials() {
        for args in [
            &["apikeys", "key", "--token", "apk_supersecret", "list"][..],
            &["apikeys", "authenticate", "--credential", "apk_supersecret"],
        ] {
            let cli = super::Cli::try_parse_from(args).unwrap();
            let debug = format!("{cli:?}");
            assert!(!debug.contains("supersecret") && debug.contains("REDACTED"), "{debug}");
        }
    }
}
