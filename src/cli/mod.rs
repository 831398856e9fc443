//! The `apikeys` command line. One binary:
//!
//! - server side ([`serve`]): `serve`, the offline `migrate` and `bootstrap` that work straight on the
//!   database, and `config`, which prints the effective configuration;
//! - client side, gRPC to a running server through the generated client ([`connection`]): `key ...`
//!   ([`keys`]), `authenticate`, `permissions` and `health` ([`public`]), printing tables or JSON
//!   ([`output`]).
//!
//! Every flag has an `APIKEYS_*` environment variable; `serve` settings can also come from a TOML file.

pub mod connection;
pub mod keys;
pub mod output;
pub mod public;
pub mod serve;

use clap::{Parser, Subcommand};

use crate::{
    config::Settings,
    server::{self, Application, StartupError},
    telemetry::{self, LogFormat},
};

/// apikeys: issues and validates API key accounts over gRPC.
#[derive(Debug, Parser)]
#[command(name = "apikeys", version, about, long_about = None)]
pub struct Cli {
    /// Log format [default: text].
    #[arg(long, env = "APIKEYS_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
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
    #[command(after_help = "Examples:
  apikeys serve
  apikeys serve --config /etc/apikeys.toml --metrics-listen 127.0.0.1:9090
  apikeys serve --listen 0.0.0.0:50051 --tls-cert cert.pem --tls-key key.pem --tls-client-ca clients.pem")]
    Serve(serve::ServeArgs),
    /// Apply database migrations and exit.
    #[command(after_help = "Example:
  apikeys migrate --database-url postgres://apikeys@db/apikeys")]
    Migrate(serve::StorageArgs),
    /// Create an organization with its first administrator key, offline, and print the token once.
    #[command(after_help = "Example:
  apikeys bootstrap --org acme")]
    Bootstrap(serve::BootstrapArgs),
    /// Print the configuration `serve` would use (flags > env > file > defaults), secrets redacted.
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
    /// Check a credential against a running server and show whose it is.
    Authenticate(public::AuthenticateArgs),
    /// List the permission catalog of a running server.
    Permissions(public::PermissionsArgs),
    /// Ask a running server for its health; exit 0 only when it is SERVING.
    Health(public::HealthArgs),
}

impl Cli {
    /// The log settings given on the command line or in the environment.
    fn log_settings(&self) -> Settings {
        Settings { log_format: self.log_format, log_level: self.log_level.clone(), ..Settings::default() }
    }

    fn init_logs(settings: &Settings) {
        telemetry::init(settings.log_format.unwrap_or(LogFormat::Text), settings.log_level.as_deref());
    }

    /// Client commands log only warnings unless asked: their output is the point.
    fn init_client_logs(logs: Settings) {
        let quiet = Settings { log_level: Some("warn".to_owned()), ..Settings::default() };
        Self::init_logs(&quiet.overlaid_with(logs));
    }
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, as a message for the operator (for client commands: the server's
/// code and message).
pub async fn run(cli: Cli) -> Result<(), StartupError> {
    let logs = cli.log_settings();
    match cli.command {
        Command::Serve(args) => {
            let settings = args.layered()?.overlaid_with(logs);
            Cli::init_logs(&settings);
            let app = Application::build(settings.server_config()).await?;
            app.run(serve::shutdown_signal()).await
        }
        Command::Config(args) => serve::print_config(&args.serve.layered()?.overlaid_with(logs), args.format),
        Command::Migrate(args) => {
            let settings = args.layered()?.overlaid_with(logs);
            Cli::init_logs(&settings);
            server::open_store(&settings.server_config()).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bootstrap(args) => {
            let settings = args.storage.layered()?.overlaid_with(logs);
            Cli::init_logs(&settings);
            let config = settings.server_config();
            let store = server::open_store(&config).await?;
            let (keys, _) = server::components(&config, store)?;
            let (org, issued) = keys.create_org_admin(&args.org, "default", |_| Ok(())).await?;
            println!("Created org {:?} ({}) with administrator key {}.", org.name, org.id, issued.key.id);
            println!("Token (shown once; it cannot be retrieved again):");
            println!("{}", issued.credential.token());
            Ok(())
        }
        Command::Key(command) => {
            Cli::init_client_logs(logs);
            keys::run(command).await
        }
        Command::Authenticate(args) => {
            Cli::init_client_logs(logs);
            public::authenticate(args).await
        }
        Command::Permissions(args) => {
            Cli::init_client_logs(logs);
            public::permissions(args).await
        }
        Command::Health(args) => {
            Cli::init_client_logs(logs);
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
            assert!(!debug.contains("supersecret") && debug.contains("<redacted>"), "{debug}");
        }
    }
}
