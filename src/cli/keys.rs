//! `apikeys key ...`: the admin commands over the key lifecycle (create, list, get, update,
//! regenerate, delete), each one gRPC call (or a few, for paging and read-modify-write) through the
//! generated client with the admin token.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use tonic::metadata::MetadataValue;

use super::{
    connection::{AdminArgs, ClientArgs, Sends, authed, failed},
    output::{self, OutputFormat, SHOWN_ONCE},
};
use crate::{
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::StartupError,
};

/// `apikeys key`.
#[derive(Debug, Args)]
pub struct KeyCommand {
    /// Server connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Admin credentials.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// The key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create a key; prints its ID, secret and token once.
    #[command(after_help = "Examples:
  apikeys key create --name 'CI deployer' --permission read_data --permission read_playbook
  apikeys key create --name 'Status page' --app statuspage --permissions-file apikey_permissions.txt
  apikeys key create --name backup --output json | jq -r .token")]
    Create(CreateArgs),
    /// List keys, every page unless --page-size or --page-token is given.
    #[command(after_help = "Examples:
  apikeys key list
  apikeys key list --permission read_data --name-contains deploy
  apikeys key list --state active --expiring-within 7d      # keys about to expire
  apikeys key list --page-size 20 --output json | jq -r .next_page_token")]
    List(ListArgs),
    /// Show one key.
    #[command(after_help = "Example:
  apikeys key get 0b8e2c4e-5d4f-4a8e-9d8c-2f2f7a1c9b11")]
    Get(IdArg),
    /// Change a key's name, description or permissions (guarded by its etag).
    #[command(after_help = "Examples:
  apikeys key update ID --description 'deploys production'
  apikeys key update ID --add-permission edit_data --remove-permission read_playbook
  apikeys key update ID --set-permissions read_data,read_function
  apikeys key update ID --add-permission read_data --acknowledge-app-impact   # app-managed key")]
    Update(UpdateArgs),
    /// Replace a key's secret (same ID); prints the new secret and token once.
    #[command(after_help = "Examples:
  apikeys key regenerate ID
  apikeys key regenerate ID --grace 1h    # the old secret keeps working for an hour")]
    Regenerate(RegenerateArgs),
    /// Delete a key: it stops working at once, its name is free, and `key undelete` restores it
    /// until its purge time (30 days by default).
    #[command(after_help = "Example:
  apikeys key delete ID")]
    Delete(GuardedArgs),
    /// Which of a key's permissions were actually required of it lately (least privilege), and the
    /// `key update` that would drop the others.
    #[command(after_help = "Examples:
  apikeys key usage ID              # the last 30 days
  apikeys key usage ID --days 90")]
    Usage(UsageArgs),
    /// Restore a deleted key before its purge time, with the secret it had.
    #[command(after_help = "Examples:
  apikeys key list --state deleted      # deleted keys and their purge times
  apikeys key undelete ID")]
    Undelete(UnlockArgs),
    /// Unlock a key that too many failed authentications locked; its secret stays the same.
    #[command(after_help = "Example:
  apikeys key unlock ID")]
    Unlock(UnlockArgs),
    /// Disable a key: refused at once, its secret kept, until `key enable`.
    #[command(after_help = "Examples:
  apikeys key disable ID
  apikeys key disable ID --acknowledge-app-impact   # app-managed key: the app stops working")]
    Disable(GuardedArgs),
    /// Enable a disabled key, with the secret it had.
    #[command(after_help = "Example:
  apikeys key enable ID")]
    Enable(UnlockArgs),
    /// Show the organization's policy, or change it.
    #[command(after_help = "Examples:
  apikeys key policy
  apikeys key policy --lockout-threshold 20     # lock a key after 20 consecutive failures
  apikeys key policy --lockout-threshold 0      # never lock
  apikeys key policy --max-key-lifetime 90d     # new keys expire within 90 days
  apikeys key policy --max-key-lifetime 0       # no maximum")]
    Policy(PolicyArgs),
}

/// A lifetime such as `90d`, `12h`, `30m` or `45s` (`0` for none).
///
/// # Errors
/// A message saying the accepted form.
pub fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a lifetime like 90d, 12h, 30m or 45s");
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        "d" => number.checked_mul(86_400),
        _ => None,
    };
    seconds.map(std::time::Duration::from_secs).ok_or_else(bad)
}

/// When a key given `--expires-in` or `--expire-time` expires.
fn expiry(
    expires_in: Option<std::time::Duration>,
    expire_time: Option<&str>,
) -> Result<Option<prost_types::Timestamp>, StartupError> {
    let at = match (expires_in, expire_time) {
        (Some(lifetime), _) => {
            let lifetime = chrono::Duration::from_std(lifetime).map_err(|_| "--expires-in is too long")?;
            chrono::Utc::now() + lifetime
        }
        (None, Some(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("--expire-time {text:?} is not an RFC 3339 time ({e}), e.g. 2027-01-31T00:00:00Z"))?
            .with_timezone(&chrono::Utc),
        (None, None) => return Ok(None),
    };
    Ok(Some(pb::timestamp(at)))
}

/// `key unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The key ID.
    pub id: String,
    /// Act only if the key's etag is still this one.
    #[arg(long)]
    pub etag: Option<String>,
}

/// `key policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Consecutive failed authentications after which a key locks; 0 turns locking off.
    #[arg(long)]
    pub lockout_threshold: Option<i32>,
    /// Longest lifetime of a key (`90d`, `12h`, ...; `0`: no maximum). New keys without an expiry
    /// get it.
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME")]
    pub max_key_lifetime: Option<std::time::Duration>,
}

/// `key create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name, unique in the organization ignoring case.
    #[arg(long)]
    pub name: String,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// A permission to grant (repeat for more).
    #[arg(long = "permission", value_name = "NAME")]
    pub permissions: Vec<String>,
    /// A file of permissions, one per line; `#` comments and blank lines ignored (the format of an
    /// app's `apikey_permissions.txt`).
    #[arg(long, value_name = "FILE")]
    pub permissions_file: Option<PathBuf>,
    /// The installed app that owns the key.
    #[arg(long, value_name = "APP_ID", default_value = "")]
    pub app: String,
    /// Expire after this long (`90d`, `12h`, `30m`, `45s`).
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME", conflicts_with = "expire_time")]
    pub expires_in: Option<std::time::Duration>,
    /// Expire at this time (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expire_time: Option<String>,
    /// Only usable from these networks (CIDR, comma-separated or repeated; default: any address).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub allow_from: Vec<String>,
    /// At most this many requests per window, e.g. `100/1m`, `5/1s`, `10000/1d`.
    #[arg(long, value_parser = parse_rate_limit, value_name = "N/WINDOW")]
    pub rate_limit: Option<pb::RateLimit>,
}

/// `key list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys whose name contains this text, ignoring case.
    #[arg(long)]
    pub name_contains: Option<String>,
    /// Only keys owned by this app.
    #[arg(long, value_name = "APP_ID")]
    pub app: Option<String>,
    /// Only keys holding this permission.
    #[arg(long)]
    pub permission: Option<String>,
    /// Only keys in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    /// Also list deleted keys (until they are purged).
    #[arg(long)]
    pub show_deleted: bool,
    /// Only keys that expire within this long from now (`7d`, `12h`; expired ones included).
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME")]
    pub expiring_within: Option<std::time::Duration>,
    /// Fetch one page of this size (prints next_page_token) instead of every page.
    #[arg(long)]
    pub page_size: Option<i32>,
    /// Fetch the page this token (from a previous page) names.
    #[arg(long)]
    pub page_token: Option<String>,
}

/// The states `key list --state` filters on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateFilter {
    /// Authenticates.
    Active,
    /// Disabled by an admin.
    Disabled,
    /// Locked by failed authentications.
    Locked,
    /// Past its expire time.
    Expired,
    /// Deleted, not yet purged.
    Deleted,
}

/// A key ID.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The key ID.
    pub id: String,
}

/// A key ID with the guards of a mutation.
#[derive(Debug, Args)]
pub struct GuardedArgs {
    /// The key ID.
    pub id: String,
    /// Act only if the key's etag is still this one.
    #[arg(long)]
    pub etag: Option<String>,
    /// Confirm acting on a key an installed app owns (the app may stop working).
    #[arg(long)]
    pub acknowledge_app_impact: bool,
}

/// `key regenerate`.
#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The key, its etag and the app-impact acknowledgement.
    #[command(flatten)]
    pub key: GuardedArgs,
    /// Keep the old secret working this long beside the new one (`1h`, `2d`; at most 7 days).
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME")]
    pub grace: Option<std::time::Duration>,
}

/// `key update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The key ID.
    pub id: String,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// Grant a permission (repeat for more).
    #[arg(long = "add-permission", value_name = "NAME", conflicts_with = "set_permissions")]
    pub add: Vec<String>,
    /// Revoke a permission (repeat for more).
    #[arg(long = "remove-permission", value_name = "NAME", conflicts_with = "set_permissions")]
    pub remove: Vec<String>,
    /// Replace all permissions with these (comma-separated; nothing after it means none).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', num_args = 0..)]
    pub set_permissions: Option<Vec<String>>,
    /// Update only if the key's etag is still this one [default: the etag of a fresh read].
    #[arg(long)]
    pub etag: Option<String>,
    /// Confirm changing the permissions of a key an installed app owns.
    #[arg(long)]
    pub acknowledge_app_impact: bool,
    /// Expire after this long from now (`90d`, `12h`, `30m`, `45s`).
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME", conflicts_with_all = ["expire_time", "no_expiry"])]
    pub expires_in: Option<std::time::Duration>,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
    pub expire_time: Option<String>,
    /// Never expire (refused if the organization sets a maximum key lifetime).
    #[arg(long)]
    pub no_expiry: bool,
    /// Only usable from these networks from now on (CIDR, comma-separated or repeated).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',', conflicts_with = "any_address")]
    pub allow_from: Vec<String>,
    /// Usable from any address again.
    #[arg(long)]
    pub any_address: bool,
    /// A new rate limit, e.g. `100/1m`.
    #[arg(long, value_parser = parse_rate_limit, value_name = "N/WINDOW", conflicts_with = "no_rate_limit")]
    pub rate_limit: Option<pb::RateLimit>,
    /// No rate limit.
    #[arg(long)]
    pub no_rate_limit: bool,
}

/// `key usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The key ID.
    pub id: String,
    /// How many days back to look (at most 400).
    #[arg(long, default_value_t = 30)]
    pub days: i64,
}

/// A rate limit such as `100/1m`: requests, a slash, and a window as [`parse_lifetime`] reads it.
///
/// # Errors
/// A message saying the accepted form.
pub fn parse_rate_limit(text: &str) -> Result<pb::RateLimit, String> {
    let bad = || format!("{text:?} is not a rate limit like 100/1m (requests per window)");
    let (requests, window) = text.trim().split_once('/').ok_or_else(bad)?;
    let requests = requests.trim().parse::<i64>().map_err(|_| bad())?;
    let window = parse_lifetime(window).map_err(|_| bad())?;
    let seconds = i64::try_from(window.as_secs()).map_err(|_| bad())?;
    Ok(pb::RateLimit { requests, window: Some(prost_types::Duration { seconds, nanos: 0 }) })
}

/// Reads a permissions file: one handle per line, `#` starts a comment, blank lines are ignored.
///
/// # Errors
/// The file cannot be read.
pub fn read_permissions_file(path: &Path) -> Result<Vec<String>, StartupError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read permissions file {}: {e}", path.display()))?;
    Ok(parse_permissions(&text))
}

fn parse_permissions(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split_once('#').map_or(line, |(before, _)| before).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

struct Admin {
    client: ApiKeyServiceClient<crate::replicas::RetryUnsent>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    output: OutputFormat,
}

impl Admin {
    /// `message` as a request carrying the admin token.
    fn authed<T>(&self, message: T) -> tonic::Request<T> {
        authed(message, &self.authorization)
    }

    async fn get(&mut self, id: &str) -> Result<pb::ApiKey, StartupError> {
        let request = self.authed(pb::GetApiKeyRequest { id: id.to_owned() });
        let response = self.client.get_api_key(request).await.map_err(failed)?.into_inner();
        response.api_key.ok_or_else(|| "the server answered without the key".into())
    }

    fn print_key(&self, key: &pb::ApiKey) {
        match self.output {
            OutputFormat::Table => print!("{}", output::fields(&output::key_fields(key))),
            OutputFormat::Json => output::print_json(&output::key_json(key)),
        }
    }

    fn print_issued(&self, heading: &str, key: &pb::ApiKey, secret: &str, token: &str) {
        match self.output {
            OutputFormat::Table => {
                println!("{heading}");
                let mut rows = output::key_fields(key);
                rows.extend([("Secret", secret.to_owned()), ("Token", token.to_owned())]);
                print!("{}", output::fields(&rows));
                println!("\n{SHOWN_ONCE}");
            }
            OutputFormat::Json => {
                output::print_json(&json!({ "api_key": output::key_json(key), "secret": secret, "token": token }));
                eprintln!("{SHOWN_ONCE}");
            }
        }
    }

    async fn create(&mut self, args: CreateArgs) -> Result<(), StartupError> {
        let mut permissions = args.permissions;
        if let Some(path) = &args.permissions_file {
            permissions.extend(read_permissions_file(path)?);
        }
        let request = pb::CreateApiKeyRequest {
            display_name: args.name,
            description: args.description,
            permissions,
            app_id: args.app,
            expire_time: expiry(args.expires_in, args.expire_time.as_deref())?,
            allowed_cidrs: args.allow_from,
            rate_limit: args.rate_limit,
        };
        let response = self.client.create_api_key(self.authed(request)).await.map_err(failed)?.into_inner();
        let key = response.api_key.unwrap_or_default();
        self.print_issued(&format!("Created API key {:?}.", key.display_name), &key, &response.secret, &response.token);
        Ok(())
    }

    async fn list(&mut self, args: ListArgs) -> Result<(), StartupError> {
        let one_page = args.page_size.is_some() || args.page_token.is_some();
        let mut request = pb::ListApiKeysRequest {
            page_size: args.page_size.unwrap_or(0),
            page_token: args.page_token.unwrap_or_default(),
            name_contains: args.name_contains.unwrap_or_default(),
            app_id: args.app.unwrap_or_default(),
            permission: args.permission.unwrap_or_default(),
            state: args
                .state
                .map_or(pb::api_key::State::Unspecified, |state| match state {
                    StateFilter::Active => pb::api_key::State::Active,
                    StateFilter::Disabled => pb::api_key::State::Disabled,
                    StateFilter::Locked => pb::api_key::State::Locked,
                    StateFilter::Expired => pb::api_key::State::Expired,
                    StateFilter::Deleted => pb::api_key::State::Deleted,
                })
                .into(),
            expiring_before: expiry(args.expiring_within, None)?,
            show_deleted: args.show_deleted,
        };
        let mut keys = Vec::new();
        let next_page_token = loop {
            let page = self.client.list_api_keys(self.authed(request.clone())).await.map_err(failed)?.into_inner();
            keys.extend(page.api_keys);
            if one_page || page.next_page_token.is_empty() {
                break page.next_page_token;
            }
            request.page_token = page.next_page_token;
        };
        match self.output {
            OutputFormat::Table => {
                print!("{}", output::keys_table(&keys));
                if !next_page_token.is_empty() {
                    println!("\nMore keys: --page-token {next_page_token}");
                }
            }
            OutputFormat::Json => {
                let keys: Vec<_> = keys.iter().map(output::key_json).collect();
                output::print_json(&json!({ "api_keys": keys, "next_page_token": next_page_token }));
            }
        }
        Ok(())
    }

    async fn update(&mut self, args: UpdateArgs) -> Result<(), StartupError> {
        let current = self.get(&args.id).await?;
        let mut key = pb::ApiKey { id: current.id.clone(), ..pb::ApiKey::default() };
        let mut mask = Vec::new();
        if let Some(name) = args.name {
            key.display_name = name;
            mask.push("display_name".to_owned());
        }
        if let Some(description) = args.description {
            key.description = description;
            mask.push("description".to_owned());
        }
        let permissions = match args.set_permissions {
            Some(set) => Some(set.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()),
            None if args.add.is_empty() && args.remove.is_empty() => None,
            None => {
                let mut permissions = current.permissions.clone();
                permissions.extend(args.add);
                permissions.retain(|p| !args.remove.contains(p));
                Some(permissions)
            }
        };
        if let Some(permissions) = permissions {
            key.permissions = permissions;
            mask.push("permissions".to_owned());
        }
        if args.no_expiry || args.expires_in.is_some() || args.expire_time.is_some() {
            key.expire_time = expiry(args.expires_in, args.expire_time.as_deref())?;
            mask.push("expire_time".to_owned());
        }
        if args.any_address || !args.allow_from.is_empty() {
            key.allowed_cidrs = args.allow_from;
            mask.push("allowed_cidrs".to_owned());
        }
        if args.no_rate_limit || args.rate_limit.is_some() {
            key.rate_limit = args.rate_limit;
            mask.push("rate_limit".to_owned());
        }
        if mask.is_empty() {
            return Err(
                "nothing to change: give --name, --description, a permission, an expiry, network or rate flag".into()
            );
        }
        let request = pb::UpdateApiKeyRequest {
            api_key: Some(key),
            update_mask: Some(prost_types::FieldMask { paths: mask }),
            etag: args.etag.unwrap_or(current.etag),
            acknowledge_app_impact: args.acknowledge_app_impact,
        };
        let response = self.client.update_api_key(self.authed(request)).await.map_err(failed)?.into_inner();
        self.print_key(&response.api_key.unwrap_or_default());
        Ok(())
    }

    async fn regenerate(&mut self, args: RegenerateArgs) -> Result<(), StartupError> {
        let grace = args
            .grace
            .map(|ttl| i64::try_from(ttl.as_secs()).map(|seconds| prost_types::Duration { seconds, nanos: 0 }))
            .transpose()
            .map_err(|_| "--grace is too long")?;
        let request = pb::RegenerateApiKeySecretRequest {
            id: args.key.id,
            etag: args.key.etag.unwrap_or_default(),
            acknowledge_app_impact: args.key.acknowledge_app_impact,
            previous_secret_ttl: grace,
        };
        let response = self.client.regenerate_api_key_secret(self.authed(request)).await.map_err(failed)?.into_inner();
        let key = response.api_key.unwrap_or_default();
        self.print_issued(
            &match &key.previous_secret_expire_time {
                Some(until) => format!(
                    "New secret for API key {:?}; the old one keeps working until {}.",
                    key.display_name,
                    output::local_time(Some(until))
                ),
                None => format!("New secret for API key {:?}; the old one no longer works.", key.display_name),
            },
            &key,
            &response.secret,
            &response.token,
        );
        Ok(())
    }

    async fn policy(&mut self, args: PolicyArgs) -> Result<(), StartupError> {
        let mut paths = Vec::new();
        let mut policy = pb::OrgPolicy::default();
        if let Some(threshold) = args.lockout_threshold {
            policy.lockout_threshold = threshold;
            paths.push("lockout_threshold".to_owned());
        }
        if let Some(max) = args.max_key_lifetime {
            let seconds = i64::try_from(max.as_secs()).map_err(|_| "--max-key-lifetime is too long")?;
            policy.max_key_lifetime = (seconds > 0).then_some(prost_types::Duration { seconds, nanos: 0 });
            paths.push("max_key_lifetime".to_owned());
        }
        let policy = if paths.is_empty() {
            let request = self.authed(pb::GetOrgPolicyRequest {});
            self.client.get_org_policy(request).await.map_err(failed)?.into_inner().policy
        } else {
            let update_mask = Some(prost_types::FieldMask { paths });
            let request = pb::UpdateOrgPolicyRequest { policy: Some(policy), update_mask };
            self.client.update_org_policy(self.authed(request)).await.map_err(failed)?.into_inner().policy
        }
        .unwrap_or_default();
        let max_secs = policy.max_key_lifetime.map(|d| d.seconds).filter(|s| *s > 0);
        match self.output {
            OutputFormat::Table => {
                let max =
                    max_secs.map_or_else(|| "none".to_owned(), |s| format!("{s} s ({:.1} days)", s as f64 / 86_400.0));
                let rows = [("Lockout threshold", policy.lockout_threshold.to_string()), ("Max key lifetime", max)];
                print!("{}", output::fields(&rows));
            }
            OutputFormat::Json => output::print_json(
                &json!({ "lockout_threshold": policy.lockout_threshold, "max_key_lifetime_secs": max_secs }),
            ),
        }
        Ok(())
    }

    async fn delete(&mut self, args: GuardedArgs) -> Result<(), StartupError> {
        let request = pb::DeleteApiKeyRequest {
            id: args.id.clone(),
            etag: args.etag.unwrap_or_default(),
            acknowledge_app_impact: args.acknowledge_app_impact,
        };
        let response = self.client.delete_api_key(self.authed(request)).await.map_err(failed)?.into_inner();
        let key = response.api_key.unwrap_or_default();
        match self.output {
            OutputFormat::Table => println!(
                "Deleted API key {}. Restore it with `apikeys key undelete {}` before {}.",
                args.id,
                args.id,
                output::local_time(key.purge_time.as_ref())
            ),
            OutputFormat::Json => output::print_json(&json!({ "deleted": args.id, "api_key": output::key_json(&key) })),
        }
        Ok(())
    }
}

/// Runs `apikeys key ...`.
///
/// # Errors
/// The server's answer (code, message, field violations) or a connection failure.
pub async fn run(command: KeyCommand) -> Result<(), StartupError> {
    let authorization = command.admin.authorization()?;
    let channel = command.client.connect(Sends::Credentials).await?;
    let mut admin = Admin { client: ApiKeyServiceClient::new(channel), authorization, output: command.client.output };
    match command.action {
        KeyAction::Create(args) => admin.create(args).await,
        KeyAction::List(args) => admin.list(args).await,
        KeyAction::Get(args) => {
            let key = admin.get(&args.id).await?;
            admin.print_key(&key);
            Ok(())
        }
        KeyAction::Update(args) => admin.update(args).await,
        KeyAction::Regenerate(args) => admin.regenerate(args).await,
        KeyAction::Delete(args) => admin.delete(args).await,
        KeyAction::Disable(args) => {
            let request = pb::DisableApiKeyRequest {
                id: args.id,
                etag: args.etag.unwrap_or_default(),
                acknowledge_app_impact: args.acknowledge_app_impact,
            };
            let response = admin.client.disable_api_key(admin.authed(request)).await.map_err(failed)?.into_inner();
            admin.print_key(&response.api_key.unwrap_or_default());
            Ok(())
        }
        KeyAction::Enable(args) => {
            let request = pb::EnableApiKeyRequest { id: args.id, etag: args.etag.unwrap_or_default() };
            let response = admin.client.enable_api_key(admin.authed(request)).await.map_err(failed)?.into_inner();
            admin.print_key(&response.api_key.unwrap_or_default());
            Ok(())
        }
        KeyAction::Usage(args) => {
            let request = pb::GetApiKeyUsageRequest {
                id: args.id.clone(),
                window: Some(prost_types::Duration { seconds: args.days.saturating_mul(86_400), nanos: 0 }),
            };
            let usage = admin.client.get_api_key_usage(admin.authed(request)).await.map_err(failed)?.into_inner();
            let suggestion = (!usage.never_exercised.is_empty())
                .then(|| format!("apikeys key update {} --set-permissions {}", args.id, usage.exercised.join(",")));
            match admin.output {
                OutputFormat::Table => {
                    let rows = [
                        ("Granted", usage.granted.join(", ")),
                        ("Exercised", usage.exercised.join(", ")),
                        ("Never exercised", usage.never_exercised.join(", ")),
                        ("Since", output::local_time(usage.window_start.as_ref())),
                        (
                            "Last used",
                            usage
                                .last_used_time
                                .as_ref()
                                .map_or_else(|| "never seen".to_owned(), |t| output::local_time(Some(t))),
                        ),
                    ];
                    print!("{}", output::fields(&rows));
                    if let Some(command) = &suggestion {
                        println!(
                            "\nCounted: Authenticate with required_permissions, calls to apikeys itself, and the \
                             requests of consumer services that report their uses (RemoteConfig::usage_report). If \
                             every service this key calls reports, this drops what it never needed in {} days:\n  \
                             {command}",
                            args.days
                        );
                    }
                }
                OutputFormat::Json => output::print_json(&json!({
                    "id": usage.id,
                    "granted": usage.granted,
                    "exercised": usage.exercised,
                    "never_exercised": usage.never_exercised,
                    "window_start": output::rfc3339(usage.window_start.as_ref()),
                    "last_used_time": output::rfc3339(usage.last_used_time.as_ref()),
                    "suggested_command": suggestion,
                    "coverage": "Authenticate with required_permissions, calls to apikeys itself, and requests \
                                 admitted by consumer services that report their uses",
                })),
            }
            Ok(())
        }
        KeyAction::Undelete(args) => {
            let request = pb::UndeleteApiKeyRequest { id: args.id, etag: args.etag.unwrap_or_default() };
            let response = admin.client.undelete_api_key(admin.authed(request)).await.map_err(failed)?.into_inner();
            admin.print_key(&response.api_key.unwrap_or_default());
            Ok(())
        }
        KeyAction::Unlock(args) => {
            let request = pb::UnlockApiKeyRequest { id: args.id, etag: args.etag.unwrap_or_default() };
            let response = admin.client.unlock_api_key(admin.authed(request)).await.map_err(failed)?.into_inner();
            admin.print_key(&response.api_key.unwrap_or_default());
            Ok(())
        }
        KeyAction::Policy(args) => admin.policy(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes_parse_with_their_unit() {
        use std::time::Duration;
        assert_eq!(parse_lifetime("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_lifetime("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_lifetime("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_lifetime("0"), Ok(Duration::ZERO));
        for bad in ["", "d", "5w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permission_files_skip_comments_and_blank_lines() {
        let text = "# permissions of the status page app\nread_data\n\n  read_playbook  # to show runbooks\n#x\n";
        assert_eq!(super::parse_permissions(text), ["read_data", "read_playbook"]);
    }
}
