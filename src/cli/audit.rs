//! `apikeys audit ...`: the audit trail on a running server. `list` pages through ListAuditEvents
//! (newest first); `watch` follows WatchAuditEvents (oldest first, as events are written), one line
//! or one JSON object per event, for a terminal or a log shipper.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{
    connection::{AdminArgs, ClientArgs, Sends, authed, failed},
    keys::parse_lifetime,
    output::{self, OutputFormat},
};
use crate::{
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::StartupError,
};

/// `apikeys audit`.
#[derive(Debug, Args)]
pub struct AuditCommand {
    /// Server connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Admin credentials.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AuditAction,
}

/// The audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// List audit events, newest first (every page unless --page-size or --page-token is given).
    #[command(after_help = "Examples:
  apikeys audit list --key ID                   # everything that happened to one key
  apikeys audit list --action DELETE --since 7d
  apikeys audit list --output json | jq '.audit_events[] | {action, actor, changes}'")]
    List(ListArgs),
    /// Follow the audit trail as events are written (Ctrl-C to stop); resumable with --cursor.
    #[command(after_help = "Examples:
  apikeys audit watch                            # from now on, one line per event
  apikeys audit watch --since 1d --output json   # JSON lines, from a day ago, for a log shipper
  apikeys audit watch --cursor CURSOR            # resume (the cursor of each event is in its JSON)")]
    Watch(WatchArgs),
}

/// `audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only events of this key.
    #[arg(long = "key", value_name = "ID")]
    pub key_id: Option<String>,
    /// Only events by this actor ID.
    #[arg(long = "actor", value_name = "ID")]
    pub actor_id: Option<String>,
    /// Only events with this action (CREATE, UPDATE, DELETE, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events of the last LIFETIME (`7d`, `12h`).
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME")]
    pub since: Option<std::time::Duration>,
    /// Fetch one page of this size (prints next_page_token) instead of every page.
    #[arg(long)]
    pub page_size: Option<i32>,
    /// Fetch the page this token names.
    #[arg(long)]
    pub page_token: Option<String>,
}

/// `audit watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Resume after this cursor (from the last event printed).
    #[arg(long, conflicts_with = "since")]
    pub cursor: Option<String>,
    /// Start with the events of the last LIFETIME instead of now.
    #[arg(long, value_parser = parse_lifetime, value_name = "LIFETIME")]
    pub since: Option<std::time::Duration>,
}

fn ago(lifetime: std::time::Duration) -> Result<prost_types::Timestamp, StartupError> {
    let lifetime = chrono::Duration::from_std(lifetime).map_err(|_| "the time is too far back")?;
    Ok(crate::pb::timestamp(chrono::Utc::now() - lifetime))
}

/// An event as JSON, with `cursor` when it comes from a stream.
fn event_json(event: &pb::AuditEvent, cursor: Option<&str>) -> Value {
    let changes: Vec<Value> = event
        .changes
        .iter()
        .map(|c| {
            let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
            json!({ "field": c.field, "old": parse(&c.old_value), "new": parse(&c.new_value) })
        })
        .collect();
    let mut value = json!({
        "id": event.id,
        "time": output::rfc3339(event.time.as_ref()),
        "action": event.action,
        "key_id": event.key_id,
        "actor": output::actor_text(event.actor.as_ref()),
        "changed_fields": event.changed_fields,
        "changes": changes,
        "request_id": event.request_id,
        "source_address": event.source_address,
    });
    if let Some(cursor) = cursor {
        value["cursor"] = json!(cursor);
    }
    value
}

/// The cursor that resumes a stream after `event`.
fn event_cursor(event: &pb::AuditEvent) -> String {
    let time = event
        .time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
    match (time, event.id.parse()) {
        (Some(time), Ok(id)) => crate::audit::AuditCursor { time, id }.encode(),
        _ => String::new(),
    }
}

/// One line of an event for people: time, action, key, actor, and what changed.
fn event_line(event: &pb::AuditEvent) -> String {
    let changes: Vec<String> =
        event.changes.iter().map(|c| format!("{}: {} -> {}", c.field, c.old_value, c.new_value)).collect();
    let changes = if changes.is_empty() { event.changed_fields.join(", ") } else { changes.join("; ") };
    format!(
        "{}  {:<17}  {}  by {}{}  {}",
        output::local_time(event.time.as_ref()),
        event.action,
        event.key_id,
        output::actor_text(event.actor.as_ref()),
        if event.source_address.is_empty() { String::new() } else { format!(" from {}", event.source_address) },
        changes
    )
}

/// Runs `apikeys audit ...`.
///
/// # Errors
/// The server's answer or a connection failure.
pub async fn run(command: AuditCommand) -> Result<(), StartupError> {
    let authorization = command.admin.authorization()?;
    let channel = command.client.connect(Sends::Credentials).await?;
    let mut client = ApiKeyServiceClient::new(channel);
    let format = command.client.output;
    match command.action {
        AuditAction::List(args) => {
            let one_page = args.page_size.is_some() || args.page_token.is_some();
            let mut request = pb::ListAuditEventsRequest {
                page_size: args.page_size.unwrap_or(0),
                page_token: args.page_token.unwrap_or_default(),
                key_id: args.key_id.unwrap_or_default(),
                actor_id: args.actor_id.unwrap_or_default(),
                action: args.action.unwrap_or_default(),
                start_time: args.since.map(ago).transpose()?,
                ..Default::default()
            };
            let mut events = Vec::new();
            let next_page_token = loop {
                let page = client
                    .list_audit_events(authed(request.clone(), &authorization))
                    .await
                    .map_err(failed)?
                    .into_inner();
                events.extend(page.audit_events);
                if one_page || page.next_page_token.is_empty() {
                    break page.next_page_token;
                }
                request.page_token = page.next_page_token;
            };
            match format {
                OutputFormat::Table => {
                    for event in &events {
                        println!("{}", event_line(event));
                    }
                    if !next_page_token.is_empty() {
                        println!("\nMore events: --page-token {next_page_token}");
                    }
                }
                OutputFormat::Json => {
                    let events: Vec<Value> = events.iter().map(|e| event_json(e, None)).collect();
                    output::print_json(&json!({ "audit_events": events, "next_page_token": next_page_token }));
                }
            }
            Ok(())
        }
        AuditAction::Watch(args) => {
            let request = pb::WatchAuditEventsRequest {
                cursor: args.cursor.unwrap_or_default(),
                start_time: args.since.map(ago).transpose()?,
            };
            let mut stream =
                client.watch_audit_events(authed(request, &authorization)).await.map_err(failed)?.into_inner();
            while let Some(message) = stream.message().await.map_err(failed)? {
                for event in &message.audit_events {
                    match format {
                        OutputFormat::Table => println!("{}", event_line(event)),
                        // One object per line, each with the cursor to resume after it.
                        OutputFormat::Json => println!("{}", event_json(event, Some(&event_cursor(event)))),
                    }
                }
            }
            Ok(())
        }
    }
}
