//! What the admin commands print: aligned tables with local times for people, JSON with stable field
//! names (those of the proto, times in RFC 3339 UTC) for scripts. Secrets appear only in the output of
//! `key create` and `key regenerate`.

use chrono::{DateTime, Local, SecondsFormat, Utc};
use clap::ValueEnum;
use serde_json::{Value, json};

use crate::pb;

/// The output format of the admin commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and local times, for people.
    Table,
    /// JSON with stable field names, for scripts.
    Json,
}

/// The warning printed with a freshly issued secret.
pub const SHOWN_ONCE: &str =
    "Store the secret and token now: they are shown only this once and cannot be retrieved again.";

fn utc(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// A timestamp in local time, for tables.
/// `ts` in local time, for people.
pub fn local_time(ts: Option<&prost_types::Timestamp>) -> String {
    utc(ts).map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S %:z").to_string()).unwrap_or_default()
}

/// A timestamp in RFC 3339 UTC, for JSON.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Value {
    utc(ts).map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
}

fn actor_type(actor: &pb::Actor) -> &'static str {
    match actor.r#type() {
        pb::ActorType::Unspecified => "unspecified",
        pb::ActorType::ApiKey => "api_key",
        pb::ActorType::User => "user",
        pb::ActorType::System => "system",
    }
}

fn actor_json(actor: Option<&pb::Actor>) -> Value {
    actor.map_or(Value::Null, |a| json!({ "type": actor_type(a), "id": a.id, "display_name": a.display_name }))
}

pub fn actor_text(actor: Option<&pb::Actor>) -> String {
    actor.map(|a| format!("{} ({} {})", a.display_name, actor_type(a), a.id)).unwrap_or_default()
}

/// An API key as JSON.
pub fn key_json(key: &pb::ApiKey) -> Value {
    json!({
        "id": key.id,
        "org_id": key.org_id,
        "display_name": key.display_name,
        "description": key.description,
        "permissions": key.permissions,
        "app_id": key.app_id,
        "created_by": actor_json(key.created_by.as_ref()),
        "updated_by": actor_json(key.updated_by.as_ref()),
        "create_time": rfc3339(key.create_time.as_ref()),
        "update_time": rfc3339(key.update_time.as_ref()),
        "etag": key.etag,
        "state": state(key),
        "failed_attempts": key.failed_attempts,
        "last_failure_time": rfc3339(key.last_failure_time.as_ref()),
        "expire_time": rfc3339(key.expire_time.as_ref()),
        "previous_secret_expire_time": rfc3339(key.previous_secret_expire_time.as_ref()),
        "delete_time": rfc3339(key.delete_time.as_ref()),
        "purge_time": rfc3339(key.purge_time.as_ref()),
        "last_used_time": rfc3339(key.last_used_time.as_ref()),
        "last_used_address": key.last_used_address,
        "last_used_agent": key.last_used_agent,
        "allowed_cidrs": key.allowed_cidrs,
        "rate_limit": key.rate_limit.as_ref().map(|limit| json!({
            "requests": limit.requests,
            "window_secs": limit.window.as_ref().map_or(0, |w| w.seconds),
        })),
    })
}

/// Rows of `label  value`, labels padded to one width.
pub fn fields(rows: &[(&str, String)]) -> String {
    aligned(&rows.iter().map(|(label, value)| vec![*label, value.as_str()]).collect::<Vec<_>>())
}

/// An API key as `label  value` rows.
pub fn key_fields(key: &pb::ApiKey) -> Vec<(&'static str, String)> {
    let last_failure = key.last_failure_time.as_ref().map(|t| format!(" (last {})", local_time(Some(t))));
    let mut rows = vec![
        ("ID", key.id.clone()),
        ("Name", key.display_name.clone()),
        ("Description", key.description.clone()),
        ("Permissions", key.permissions.join(", ")),
        ("App", key.app_id.clone()),
        ("Created", format!("{} by {}", local_time(key.create_time.as_ref()), actor_text(key.created_by.as_ref()))),
        ("Updated", format!("{} by {}", local_time(key.update_time.as_ref()), actor_text(key.updated_by.as_ref()))),
        ("State", state(key).to_owned()),
        ("Expires", key.expire_time.as_ref().map_or_else(|| "never".to_owned(), |t| local_time(Some(t)))),
        ("Failed attempts", format!("{}{}", key.failed_attempts, last_failure.unwrap_or_default())),
        (
            "Last used",
            key.last_used_time.as_ref().map_or_else(
                || "never seen".to_owned(),
                |t| {
                    let from = if key.last_used_address.is_empty() {
                        String::new()
                    } else {
                        format!(" from {}", key.last_used_address)
                    };
                    let by = if key.last_used_agent.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", key.last_used_agent)
                    };
                    format!("{}{from}{by}", local_time(Some(t)))
                },
            ),
        ),
        ("Networks", if key.allowed_cidrs.is_empty() { "any".to_owned() } else { key.allowed_cidrs.join(", ") }),
        (
            "Rate limit",
            key.rate_limit.as_ref().map_or_else(
                || "none".to_owned(),
                |limit| format!("{} per {} s", limit.requests, limit.window.as_ref().map_or(0, |w| w.seconds)),
            ),
        ),
        ("Etag", key.etag.clone()),
    ];
    if let Some(deleted) = &key.delete_time {
        rows.push(("Deleted", local_time(Some(deleted))));
        rows.push(("Purged", format!("{} (undelete before then)", local_time(key.purge_time.as_ref()))));
    }
    rows
}

/// A key's state, as the CLI prints it.
fn state(key: &pb::ApiKey) -> &'static str {
    match key.state() {
        pb::api_key::State::Locked => "LOCKED",
        pb::api_key::State::Disabled => "DISABLED",
        pb::api_key::State::Expired => "EXPIRED",
        pb::api_key::State::Deleted => "DELETED",
        pb::api_key::State::Active | pb::api_key::State::Unspecified => "ACTIVE",
    }
}

/// A table with a header row; every column padded to its widest cell, the last one not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let body = rows.iter().map(|row| row.iter().map(String::as_str).collect());
    aligned(&std::iter::once(header.to_vec()).chain(body).collect::<Vec<_>>())
}

/// Lines of cells, every column padded to its widest cell, trailing spaces trimmed.
fn aligned(lines: &[Vec<&str>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| lines.iter().filter_map(|cells| cells.get(i)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    lines.iter().map(line).collect()
}

/// API keys as a table.
pub fn keys_table(keys: &[pb::ApiKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.display_name.clone(),
                k.app_id.clone(),
                state(k).to_owned(),
                local_time(k.update_time.as_ref()),
                k.permissions.join(","),
            ]
        })
        .collect();
    table(&["ID", "NAME", "APP", "STATE", "UPDATED", "PERMISSIONS"], &rows)
}

/// A principal as JSON.
pub fn principal_json(p: &pb::Principal) -> Value {
    let restrictions = p.restrictions.clone().unwrap_or_default();
    json!({
        "key_id": p.key_id,
        "org_id": p.org_id,
        "display_name": p.display_name,
        "permissions": p.permissions,
        "app_id": p.app_id,
        "principal_type": if p.principal_type() == pb::PrincipalType::ApiKey { "api_key" } else { "unspecified" },
        "restrictions": {
            "interactive_login_allowed": restrictions.interactive_login_allowed,
            "two_factor_required": restrictions.two_factor_required,
            "can_own_incidents": restrictions.can_own_incidents,
            "can_be_incident_member": restrictions.can_be_incident_member,
            "can_be_task_member": restrictions.can_be_task_member,
            "can_be_group_member": restrictions.can_be_group_member,
            "unowned_incident_group": restrictions.unowned_incident_group,
        },
    })
}

/// A principal as `label  value` rows.
pub fn principal_fields(p: &pb::Principal) -> String {
    let r = p.restrictions.clone().unwrap_or_default();
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    fields(&[
        ("Key ID", p.key_id.clone()),
        ("Org ID", p.org_id.clone()),
        ("Name", p.display_name.clone()),
        ("Permissions", p.permissions.join(", ")),
        ("App", p.app_id.clone()),
        ("Interactive login", yes_no(r.interactive_login_allowed)),
        ("Two-factor required", yes_no(r.two_factor_required)),
        ("Can own incidents", yes_no(r.can_own_incidents)),
        ("Incident member", yes_no(r.can_be_incident_member)),
        ("Task member", yes_no(r.can_be_task_member)),
        ("Group member", yes_no(r.can_be_group_member)),
        ("Unowned incidents go to", r.unowned_incident_group),
    ])
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let text = super::table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["x".into(), "22".into()]]);
        assert_eq!(text, "A    LONG\nxyz  1\nx    22\n");
    }
}
