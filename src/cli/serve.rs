//! The server side of the command line: `serve`, `migrate`, `bootstrap` and `config`. Every setting
//! of [`crate::config::ServerConfig`] is a flag of these commands, generated from the struct ([`SettingFlags`]), and
//! `--config FILE` names the TOML file; [`crate::config::load`] layers them.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, ValueEnum};

use crate::{
    config::{self, Loaded, settings},
    server::StartupError,
};

/// The settings given as flags: one `--<setting>` per setting of [`crate::config::ServerConfig`], with the field's
/// doc comment as help.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags(Vec<(String, String)>);

/// A default as `--help` shows it.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "unset".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Args for SettingFlags {
    fn augment_args(command: Command) -> Command {
        settings().iter().fold(command, |command, setting| {
            let help = format!("{} [default: {}] [env: {}]", setting.doc, shown(&setting.default), setting.env());
            command.arg(Arg::new(setting.key.clone()).long(setting.flag()).value_name("VALUE").help(help))
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = settings()
            .iter()
            .filter_map(|s| matches.get_one::<String>(&s.key).map(|raw| (s.key.clone(), raw.clone())))
            .collect();
        Ok(Self(given))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Where `serve`, `migrate`, `bootstrap` and `config` get their settings.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// TOML file with settings (keys are the flag names with `_`); variables and flags win over it.
    #[arg(long, env = "APIKEYS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The settings.
    #[command(flatten)]
    pub flags: SettingFlags,
}

impl SettingsArgs {
    /// The configuration these arguments, the environment and the file describe.
    ///
    /// # Errors
    /// An unreadable file, an unknown key, a bad value, or a setting that would fail later.
    pub fn load(&self) -> Result<Loaded, StartupError> {
        Ok(config::load(self.config.as_deref(), &self.flags.0)?)
    }
}

/// `apikeys bootstrap`.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Name of the organization to create.
    #[arg(long)]
    pub org: String,
    /// Settings (storage, hashing).
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// How `apikeys config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// A TOML file `--config` accepts, each value followed by where it came from.
    Toml,
    /// `{"config": {...}, "sources": {"key": "where it came from"}}`.
    Json,
}

/// `apikeys config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: ConfigFormat,
    /// The settings `serve` would get.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// A JSON scalar as a TOML value.
fn toml_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => toml::Value::String(text.clone()).to_string(),
        other => other.to_string(),
    }
}

/// Prints the configuration in effect, the database password redacted, and where each value came
/// from.
///
/// # Errors
/// The configuration cannot be serialized (a bug).
pub fn print_config(loaded: &Loaded, format: ConfigFormat) -> Result<(), StartupError> {
    let values = serde_json::to_value(loaded.config.redacted())?;
    let text = match format {
        ConfigFormat::Json => {
            let sources: serde_json::Map<String, serde_json::Value> =
                settings().iter().map(|s| (s.key.clone(), loaded.source(&s.key).into())).collect();
            serde_json::to_string_pretty(&serde_json::json!({ "config": values, "sources": sources }))? + "\n"
        }
        ConfigFormat::Toml => {
            let mut text = String::new();
            let mut table = "";
            for setting in settings() {
                let (section, name) = setting.key.rsplit_once('.').unwrap_or(("", &setting.key));
                if section != table {
                    text.push_str(&format!("\n[{section}]\n"));
                    table = section;
                }
                let source = loaded.source(&setting.key);
                match setting.key.split('.').fold(&values, |at, part| &at[part]) {
                    serde_json::Value::Null => text.push_str(&format!("# {name} is unset ({source})\n")),
                    value => text.push_str(&format!("{name} = {}  # {source}\n", toml_value(value))),
                }
            }
            text
        }
    };
    print!("{text}");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => signal.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        _ = term => {},
    }
}
