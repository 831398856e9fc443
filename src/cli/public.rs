//! The client commands that need no admin token: `authenticate` (check a credential), `permissions`
//! (the catalog) and `health` (exit 0 only when the server reports SERVING; the Docker HEALTHCHECK).

use std::path::PathBuf;

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::{
    connection::{ClientArgs, Sends, failed},
    output::{self, OutputFormat},
};
use crate::{
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::StartupError,
};

/// `apikeys authenticate`. Its `Debug` hides the credential.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  apikeys authenticate --credential-file token.txt --require read_data
  APIKEYS_CREDENTIAL=apk_... apikeys authenticate --output json
  apikeys authenticate --key-id ID --credential-file secret.txt")]
pub struct AuthenticateArgs {
    /// Server connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The token to check; or, with --key-id, the secret. Prefer --credential-file or the
    /// environment variable: arguments are visible to other local users.
    #[arg(long, env = "APIKEYS_CREDENTIAL", hide_env_values = true, conflicts_with = "credential_file")]
    pub credential: Option<SecretString>,
    /// File holding the token (or, with --key-id, the secret); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// Check a key ID and secret instead of a token.
    #[arg(long)]
    pub key_id: Option<String>,
    /// A permission the key must hold (repeat for more); PERMISSION_DENIED names the missing ones.
    #[arg(long = "require", value_name = "NAME")]
    pub required: Vec<String>,
    /// The client address to check the key's networks against (keys restricted to networks are
    /// refused without one).
    #[arg(long, value_name = "IP")]
    pub client_address: Option<String>,
}

/// `apikeys permissions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  apikeys permissions
  apikeys permissions --output json | jq -r '.permissions[].name'")]
pub struct PermissionsArgs {
    /// Server connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `apikeys health`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  apikeys health
  apikeys health --server https://apikeys.internal:50051 --ca-cert ca.pem
Exit status 0 when the server reports SERVING, 1 otherwise.")]
pub struct HealthArgs {
    /// Server connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service to ask about; empty means the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
}

fn read_credential(args: &AuthenticateArgs) -> Result<String, StartupError> {
    let text = match (&args.credential, &args.credential_file) {
        (Some(value), _) => value.expose_secret().to_owned(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read the credential from standard input: {e}"))?,
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read credential file {}: {e}", path.display()))?
        }
        (None, None) => {
            return Err("give the credential with --credential-file, --credential or APIKEYS_CREDENTIAL".into());
        }
    };
    Ok(text.trim().to_owned())
}

/// Runs `apikeys authenticate`: prints the principal, or exits non-zero with the server's answer.
///
/// # Errors
/// The server's answer or a connection failure.
pub async fn authenticate(args: AuthenticateArgs) -> Result<(), StartupError> {
    let credential = read_credential(&args)?;
    let mut request = pb::AuthenticateRequest {
        required_permissions: args.required.clone(),
        client_address: args.client_address.clone().unwrap_or_default(),
        ..Default::default()
    };
    match &args.key_id {
        Some(key_id) => {
            request.key_id.clone_from(key_id);
            request.secret = credential;
        }
        None => request.token = credential,
    }
    let mut client = ApiKeyServiceClient::new(args.client.connect(Sends::Credentials).await?);
    let response = client.authenticate(request).await.map_err(failed)?.into_inner();
    let principal = response.principal.unwrap_or_default();
    match args.client.output {
        OutputFormat::Table => print!("{}", output::principal_fields(&principal)),
        OutputFormat::Json => output::print_json(&json!({ "principal": output::principal_json(&principal) })),
    }
    Ok(())
}

/// Runs `apikeys permissions`: prints the catalog.
///
/// # Errors
/// A connection failure.
pub async fn permissions(args: PermissionsArgs) -> Result<(), StartupError> {
    let mut client = ApiKeyServiceClient::new(args.client.connect(Sends::Nothing).await?);
    let catalog = client.list_permissions(pb::ListPermissionsRequest {}).await.map_err(failed)?.into_inner();
    match args.client.output {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = catalog
                .permissions
                .iter()
                .map(|p| vec![p.category.clone(), p.name.clone(), p.description.clone()])
                .collect();
            print!("{}", output::table(&["CATEGORY", "NAME", "DESCRIPTION"], &rows));
        }
        OutputFormat::Json => {
            let permissions: Vec<_> = catalog
                .permissions
                .iter()
                .map(|p| json!({ "name": p.name, "category": p.category, "description": p.description }))
                .collect();
            output::print_json(&json!({ "permissions": permissions }));
        }
    }
    Ok(())
}

/// Runs `apikeys health`: prints the status; an error unless it is SERVING.
///
/// # Errors
/// NOT_SERVING (or another status), or a connection failure.
pub async fn health(args: HealthArgs) -> Result<(), StartupError> {
    let mut client = HealthClient::new(args.client.connect(Sends::Nothing).await?);
    let request = HealthCheckRequest { service: args.service.clone() };
    let status = client.check(request).await.map_err(failed)?.into_inner().status();
    let name = status.as_str_name();
    match args.client.output {
        OutputFormat::Table => println!("{name}"),
        OutputFormat::Json => output::print_json(&json!({ "service": args.service, "status": name })),
    }
    if status == ServingStatus::Serving { Ok(()) } else { Err(format!("server reports {name}").into()) }
}
