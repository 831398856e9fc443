//! The console's HTML: plain server-rendered pages and forms (usable by keyboard alone, each field
//! labelled, its errors next to it and tied to it by `aria-describedby`), every value escaped.
//! The one script (`console.js`) only copies credentials, clears them, and asks before leaving a
//! page with credentials on it.

use std::fmt::Write as _;

use super::{Action, Visitor};
use crate::pb;

/// The stylesheet, embedded.
pub const CSS: &str = include_str!("assets/console.css");
/// The script, embedded.
pub const JS: &str = include_str!("assets/console.js");

/// A form field's name, as the console's forms and errors use it.
pub type Field = String;

/// What every signed-in page shows: who is signed in, and the token for its forms.
pub struct Chrome {
    name: String,
    kind: &'static str,
    csrf: String,
    /// The permissions the signed-in admin holds.
    held: Vec<String>,
    /// Signed in by an auth proxy: no sign-out button (the platform signs people out).
    proxied: bool,
}

impl Chrome {
    /// The chrome for `visitor`.
    pub(super) fn of(visitor: &Visitor) -> Self {
        let kind = if visitor.principal.is_person() { "user" } else { "API key" };
        let held = visitor.principal.permissions.clone();
        Self {
            name: visitor.principal.display_name.clone(),
            kind,
            csrf: visitor.csrf.clone(),
            held,
            proxied: visitor.proxied,
        }
    }
}

/// The list's search.
pub struct ListFilter {
    /// Part of the display name.
    pub name: String,
    /// A permission the keys must hold.
    pub permission: String,
    /// The page.
    pub page_token: String,
    /// Whether deleted keys (still restorable) are listed too.
    pub show_deleted: bool,
}

/// The create / edit form's values.
#[derive(Default)]
pub struct KeyForm {
    /// Empty when creating.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Checked permissions.
    pub permissions: Vec<String>,
    /// The etag of the version being edited.
    pub etag: String,
    /// The owning app, if any.
    pub app_id: String,
    /// When the key expires (`YYYY-MM-DDTHH:MM`, UTC); empty: never.
    pub expire_time: String,
}

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn document(title: &str, chrome: Option<&Chrome>, body: &str) -> String {
    let header = match chrome {
        Some(chrome) if chrome.proxied => format!(
            r#"<header><a class="brand" href="/keys">API Keys</a><span class="who">Signed in as <strong>{}</strong> ({}) through your platform</span></header>"#,
            escape(&chrome.name),
            chrome.kind
        ),
        Some(chrome) => format!(
            r#"<header><a class="brand" href="/keys">API Keys</a><span class="who">Signed in as <strong>{}</strong> ({})</span><form method="post" action="/logout"><input type="hidden" name="csrf" value="{}"><button type="submit" class="link">Sign out</button></form></header>"#,
            escape(&chrome.name),
            chrome.kind,
            escape(&chrome.csrf)
        ),
        None => r#"<header><span class="brand">API Keys</span></header>"#.to_owned(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · apikeys</title><link rel="stylesheet" href="/console.css"><script src="/console.js" defer></script></head><body>{header}<main>{body}</main></body></html>"#,
        escape(title)
    )
}

/// A page with a title and one message.
pub fn message(title: &str, text: &str) -> String {
    document(
        title,
        None,
        &format!(r#"<h1>{}</h1><p>{}</p><p><a href="/keys">Back to API Keys</a></p>"#, escape(title), escape(text)),
    )
}

/// The sign-in page, with `error` if the last attempt failed.
pub fn login(error: Option<&str>) -> String {
    let (invalid, described, error) = match error {
        Some(error) => (
            r#" aria-invalid="true""#,
            r#" aria-describedby="token-error""#,
            format!(r#"<p id="token-error" class="error" role="alert">{}</p>"#, escape(error)),
        ),
        None => ("", "", String::new()),
    };
    let body = format!(
        r#"<h1>Sign in</h1><p>Sign in through your platform, or with the token of an API key holding the API Keys administration permission (the bootstrap administrator's token is in the data directory's <code>bootstrap-token</code>).</p><form method="post" action="/login" class="stack"><label for="token">Admin API key token</label><input id="token" name="token" type="password" autocomplete="off" required autofocus{invalid}{described}>{error}<button type="submit">Sign in</button></form>"#
    );
    document("Sign in", None, &body)
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| format!(r#"<time datetime="{}">{}</time>"#, t.to_rfc3339(), t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default()
}

fn actor(actor: Option<&pb::Actor>) -> String {
    actor
        .map(|a| {
            let kind = match a.r#type() {
                pb::ActorType::User => "user",
                pb::ActorType::ApiKey => "API key",
                _ => "system",
            };
            format!(r#"{} <span class="hint">({kind})</span>"#, escape(&a.display_name))
        })
        .unwrap_or_default()
}

fn state(key: &pb::ApiKey) -> &'static str {
    match key.state() {
        pb::api_key::State::Active => "Active",
        pb::api_key::State::Locked => "Locked",
        pb::api_key::State::Disabled => "Disabled",
        pb::api_key::State::Expired => "Expired",
        pb::api_key::State::Deleted => "Deleted",
        _ => "Unknown",
    }
}

/// The API Keys list.
pub fn list(
    chrome: &Chrome,
    catalog: &[pb::Permission],
    filter: &ListFilter,
    keys: &[pb::ApiKey],
    next_page_token: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::from(
        r#"<div class="title"><h1>API Keys</h1><a class="button" href="/keys/new">Create API Key</a></div>"#,
    );
    let _ = write!(
        body,
        r#"<form method="get" action="/keys" class="search" role="search"><label for="name">Name contains</label><input id="name" name="name" type="search" value="{}"><label for="permission">Holding permission</label><select id="permission" name="permission"><option value="">Any</option>"#,
        escape(&filter.name)
    );
    for permission in catalog {
        let selected = if permission.name == filter.permission { " selected" } else { "" };
        let _ = write!(body, r#"<option value="{0}"{selected}>{0}</option>"#, escape(&permission.name));
    }
    let deleted = if filter.show_deleted { " checked" } else { "" };
    let _ = write!(
        body,
        r#"</select><input type="checkbox" id="show_deleted" name="show_deleted"{deleted}><label for="show_deleted">Show deleted</label><button type="submit">Search</button></form>"#
    );
    if let Some(error) = error {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, escape(error));
    }
    if keys.is_empty() {
        body.push_str(r#"<p id="empty">No API keys match.</p>"#);
    } else {
        body.push_str(r#"<table id="keys"><thead><tr><th scope="col">Display name</th><th scope="col">Description</th><th scope="col">Permissions</th><th scope="col">Created by</th><th scope="col">Last updated by</th><th scope="col">App</th><th scope="col">State</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col">Actions</th></tr></thead><tbody>"#);
        for key in keys {
            let id = escape(&key.id);
            let _ = write!(
                body,
                r#"<tr data-id="{id}"><th scope="row">{}</th><td>{}</td><td>{}</td><td>{}<br>{}</td><td>{}<br>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="actions">{}</td></tr>"#,
                escape(&key.display_name),
                escape(&key.description),
                key.permissions.iter().map(|p| format!("<code>{}</code>", escape(p))).collect::<Vec<_>>().join(" "),
                actor(key.created_by.as_ref()),
                time(key.create_time.as_ref()),
                actor(key.updated_by.as_ref()),
                time(key.update_time.as_ref()),
                escape(&key.app_id),
                state(key),
                key.expire_time.as_ref().map_or_else(|| "Never".to_owned(), |t| time(Some(t))),
                key.last_used_time.as_ref().map_or_else(|| "Never".to_owned(), |t| time(Some(t))),
                actions(chrome, key),
            );
        }
        body.push_str("</tbody></table>");
    }
    let query = |token: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("name", &filter.name)
            .append_pair("permission", &filter.permission)
            .append_pair("show_deleted", if filter.show_deleted { "on" } else { "" })
            .append_pair("page_token", token)
            .finish()
    };
    body.push_str(r#"<nav class="pages" aria-label="Pages">"#);
    if !filter.page_token.is_empty() {
        let _ = write!(body, r#"<a href="/keys?{}">First page</a> "#, escape(&query("")));
    }
    if !next_page_token.is_empty() {
        let _ = write!(body, r#"<a id="next" href="/keys?{}">Next page</a>"#, escape(&query(next_page_token)));
    }
    body.push_str("</nav>");
    document("API Keys", Some(chrome), &body)
}

/// The actions a key in its state offers: changes for a live key (Disable for an active one,
/// Enable or Unlock to restore a disabled or locked one), Undelete for a deleted one.
fn actions(chrome: &Chrome, key: &pb::ApiKey) -> String {
    let id = escape(&key.id);
    let button = |path: &str, label: &str| {
        format!(
            r#"<form method="post" action="/keys/{id}/{path}" class="inline"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="etag" value="{}"><button type="submit" class="link">{label}</button></form>"#,
            escape(&chrome.csrf),
            escape(&key.etag)
        )
    };
    let mut out = String::new();
    match key.state() {
        pb::api_key::State::Deleted => return button("undelete", "Undelete"),
        pb::api_key::State::Locked => out.push_str(&button("unlock", "Unlock")),
        pb::api_key::State::Disabled => out.push_str(&button("enable", "Enable")),
        pb::api_key::State::Active => {
            let _ = write!(out, r#"<a href="/keys/{id}/disable">Disable</a>"#);
        }
        _ => {}
    }
    let _ = write!(
        out,
        r#" <a href="/keys/{id}/edit">Edit</a> <a href="/keys/{id}/regenerate">Regenerate secret</a> <a href="/keys/{id}/usage">Usage</a> <a href="/keys/{id}/delete">Delete</a>"#
    );
    out
}

/// A key's use over the last 30 days: when and from where it was last used, and which of its
/// permissions were exercised (least privilege).
pub fn usage_page(chrome: &Chrome, key: &pb::ApiKey, usage: &pb::GetApiKeyUsageResponse) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "<p>None.</p>".to_owned()
        } else {
            format!(
                "<ul>{}</ul>",
                names.iter().map(|n| format!("<li><code>{}</code></li>", escape(n))).collect::<String>()
            )
        }
    };
    let mut body = format!(r#"<h1>Usage of {}</h1><dl class="usage">"#, escape(&key.display_name));
    let _ = write!(
        body,
        r#"<dt>Last used</dt><dd>{}</dd><dt>From</dt><dd>{}</dd><dt>By</dt><dd>{}</dd><dt>Since</dt><dd>{}</dd></dl>"#,
        usage.last_used_time.as_ref().map_or_else(|| "Never".to_owned(), |t| time(Some(t))),
        escape(&key.last_used_address),
        escape(&key.last_used_agent),
        time(usage.window_start.as_ref()),
    );
    let _ = write!(body, r#"<h2>Permissions exercised</h2>{}"#, list(&usage.exercised));
    let _ = write!(
        body,
        r#"<h2>Permissions never exercised</h2>{}<p class="hint">A key should hold only what it uses: consider removing these (Edit).</p><p><a href="/keys">Back to API Keys</a></p>"#,
        list(&usage.never_exercised)
    );
    document("Usage", Some(chrome), &body)
}

fn errors_for<'a>(errors: &'a [(Field, String)], field: &str) -> Vec<&'a str> {
    errors.iter().filter(|(f, _)| f == field).map(|(_, message)| message.as_str()).collect()
}

/// The error paragraph of `field` and the attributes that tie its input to it.
fn field_error(errors: &[(Field, String)], field: &str) -> (String, String) {
    let messages = errors_for(errors, field);
    if messages.is_empty() {
        return (String::new(), String::new());
    }
    let text = messages.iter().map(|m| escape(m)).collect::<Vec<_>>().join(" ");
    (
        format!(r#" aria-invalid="true" aria-describedby="{field}-error""#),
        format!(r#"<p id="{field}-error" class="error" role="alert">{text}</p>"#),
    )
}

/// The Create API Key form, or the edit form when `form.id` is set, with `errors` next to their
/// fields. Permissions come from `catalog` grouped by category; those the signed-in admin does not
/// hold are disabled, with the reason.
pub fn key_form(chrome: &Chrome, catalog: &[pb::Permission], form: &KeyForm, errors: &[(Field, String)]) -> String {
    let editing = !form.id.is_empty();
    let (title, action, submit) = if editing {
        (
            "Edit API Key",
            format!(
                "/keys/{}/edit",
                escape(&url::form_urlencoded::byte_serialize(form.id.as_bytes()).collect::<String>())
            ),
            "Save",
        )
    } else {
        ("Create API Key", "/keys".to_owned(), "Create")
    };
    let mut body = format!(r#"<h1>{title}</h1>"#);
    if !form.app_id.is_empty() {
        let _ = write!(
            body,
            r#"<p class="warning" role="note">This key belongs to the app <strong>{}</strong>. Changing it may stop the app from working.</p>"#,
            escape(&form.app_id)
        );
    }
    let (_, form_error) = field_error(errors, "form");
    let _ = write!(body, r#"<form method="post" action="{action}" class="stack" novalidate>{form_error}"#);
    let _ = write!(body, r#"<input type="hidden" name="csrf" value="{}">"#, escape(&chrome.csrf));
    if editing {
        let _ = write!(body, r#"<input type="hidden" name="etag" value="{}">"#, escape(&form.etag));
        let _ = write!(body, r#"<input type="hidden" name="app_id" value="{}">"#, escape(&form.app_id));
    }
    let (attrs, error) = field_error(errors, "display_name");
    let _ = write!(
        body,
        r#"<label for="display_name">Display name</label><input id="display_name" name="display_name" type="text" maxlength="100" required value="{}"{attrs}>{error}<p class="hint">Unique in your organization.</p>"#,
        escape(&form.display_name)
    );
    let (attrs, error) = field_error(errors, "description");
    let _ = write!(
        body,
        r#"<label for="description">Description <span class="hint">(optional)</span></label><textarea id="description" name="description" rows="3" maxlength="1000"{attrs}>{}</textarea>{error}"#,
        escape(&form.description)
    );
    let (attrs, error) = field_error(errors, "expire_time");
    let _ = write!(
        body,
        r#"<label for="expire_time">Expires <span class="hint">(UTC, optional; empty: never)</span></label><input id="expire_time" name="expire_time" type="datetime-local" value="{}"{attrs}>{error}"#,
        escape(&form.expire_time)
    );
    let (attrs, error) = field_error(errors, "permissions");
    let _ = write!(body, r#"<fieldset class="permissions"{attrs}><legend>Permissions</legend>{error}"#);
    let mut categories: Vec<&str> = catalog.iter().map(|p| p.category.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    categories.retain(|c| seen.insert(*c));
    for category in categories {
        let _ = write!(
            body,
            r#"<fieldset class="category"><legend>{}</legend>"#,
            escape(if category.is_empty() { "Other" } else { category })
        );
        for permission in catalog.iter().filter(|p| p.category == category) {
            let name = escape(&permission.name);
            let checked = if form.permissions.contains(&permission.name) { " checked" } else { "" };
            let holds = crate::domain::may_grant(&chrome.held, &permission.name);
            let disabled = if holds { "" } else { " disabled" };
            let reason = if holds {
                String::new()
            } else {
                format!(
                    r#"<span class="reason" id="perm-{name}-reason">You do not hold this permission, so you cannot grant it.</span>"#
                )
            };
            let described = if holds { String::new() } else { format!(r#" aria-describedby="perm-{name}-reason""#) };
            let _ = write!(
                body,
                r#"<div class="permission"><input type="checkbox" id="perm-{name}" name="permissions" value="{name}"{checked}{disabled}{described}><label for="perm-{name}"><code>{name}</code> {}</label>{reason}</div>"#,
                escape(&permission.description)
            );
            // A disabled box is not submitted: keep a held-by-the-key permission the admin cannot
            // grant, so saving other fields does not drop it silently (the API then refuses, as
            // it must, if the admin may not manage this key).
            if !holds && form.permissions.contains(&permission.name) {
                let _ = write!(body, r#"<input type="hidden" name="permissions" value="{name}">"#);
            }
        }
        body.push_str("</fieldset>");
    }
    body.push_str("</fieldset>");
    if !form.app_id.is_empty() {
        body.push_str(r#"<div class="permission"><input type="checkbox" id="acknowledge_app_impact" name="acknowledge_app_impact"><label for="acknowledge_app_impact">I understand the app may stop working</label></div>"#);
    }
    let _ = write!(
        body,
        r#"<div class="buttons"><button type="submit">{submit}</button> <a href="/keys">Cancel</a></div></form>"#
    );
    document(title, Some(chrome), &body)
}

/// The credentials of a key, shown once, with copy buttons and the warning; OK clears them.
pub fn credentials(chrome: &Chrome, title: &str, key: &pb::ApiKey, secret: &str, token: &str) -> String {
    let row = |id: &str, label: &str, value: &str| {
        format!(
            r#"<dt>{label}</dt><dd><code id="{id}" class="credential">{}</code> <button type="button" class="copy" data-copy="{id}" aria-label="Copy {label}">Copy</button></dd>"#,
            escape(value)
        )
    };
    let body = format!(
        r#"<h1>{}</h1><p class="warning" role="alert"><strong>Store these credentials safely now.</strong> The secret and token cannot be retrieved after you select OK; if they are lost, regenerate the secret.</p><p>API key <strong>{}</strong></p><dl id="credentials">{}{}{}</dl><p><a id="ok" class="button" href="/keys" data-clear="credentials">OK</a></p>"#,
        escape(title),
        escape(&key.display_name),
        row("cred-id", "ID", &key.id),
        row("cred-secret", "Secret", secret),
        row("cred-token", "Token", token),
    );
    document(title, Some(chrome), &body)
}

/// The confirmation of regenerating or deleting `key`, warning for an app's key.
pub fn confirm(chrome: &Chrome, key: &pb::ApiKey, action: Action, error: Option<&str>) -> String {
    let (title, path, button, consequence) = match action {
        Action::Regenerate => (
            "Regenerate API Key Secret",
            "regenerate",
            "Regenerate secret",
            "A new secret is made; the current one stops working at once. The ID stays the same.",
        ),
        Action::Delete => (
            "Delete API Key",
            "delete",
            "Delete API key",
            "The key stops working at once. It can be restored for a while (undelete), then it is gone.",
        ),
        Action::Disable => (
            "Disable API Key",
            "disable",
            "Disable API key",
            "The key stops working until it is enabled again; nothing else changes.",
        ),
    };
    let id = escape(&key.id);
    let mut body = format!(
        r#"<h1>{title}</h1><p>{}: <strong>{}</strong> (<code>{id}</code>)</p><p>{consequence}</p>"#,
        match action {
            Action::Delete => "Delete",
            Action::Disable => "Disable",
            Action::Regenerate => "Regenerate the secret of",
        },
        escape(&key.display_name)
    );
    let _ = write!(
        body,
        r#"<form method="post" action="/keys/{id}/{path}" class="stack"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="etag" value="{}">"#,
        escape(&chrome.csrf),
        escape(&key.etag)
    );
    if !key.app_id.is_empty() {
        let (attrs, message) = match error {
            Some(error) => (
                r#" aria-invalid="true" aria-describedby="acknowledge-error""#,
                format!(r#"<p id="acknowledge-error" class="error" role="alert">{}</p>"#, escape(error)),
            ),
            None => ("", String::new()),
        };
        let _ = write!(
            body,
            r#"<p class="warning" role="note">This key belongs to the app <strong>{}</strong>: the app may stop working until it is given the new credentials.</p><div class="permission"><input type="checkbox" id="acknowledge_app_impact" name="acknowledge_app_impact"{attrs}><label for="acknowledge_app_impact">I understand the app may stop working</label></div>{message}"#,
            escape(&key.app_id)
        );
    }
    let _ = write!(
        body,
        r#"<div class="buttons"><button type="submit" class="danger">{button}</button> <a href="/keys">Cancel</a></div></form>"#
    );
    document(title, Some(chrome), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(escape(r#"<script>"&'"#), "&lt;script&gt;&quot;&amp;&#39;");
        let chrome = Chrome { name: "<b>".into(), kind: "user", csrf: "t".into(), held: vec![], proxied: false };
        let key = pb::ApiKey { display_name: "<img src=x onerror=alert(1)>".into(), ..Default::default() };
        let page = list(
            &chrome,
            &[],
            &ListFilter {
                name: "\"><script>".into(),
                permission: String::new(),
                page_token: String::new(),
                show_deleted: false,
            },
            &[key],
            "",
            None,
        );
        assert!(!page.contains("<img src=x") && !page.contains("\"><script>") && !page.contains("<b>"), "{page}");
        // Every other page, given hostile text in every field it shows.
        let evil = "\"'><script>alert(1)</script>";
        let key = pb::ApiKey {
            id: evil.into(),
            display_name: evil.into(),
            description: evil.into(),
            app_id: evil.into(),
            etag: evil.into(),
            last_used_address: evil.into(),
            last_used_agent: evil.into(),
            permissions: vec![evil.into()],
            ..Default::default()
        };
        let form = KeyForm {
            id: evil.into(),
            display_name: evil.into(),
            description: evil.into(),
            permissions: vec![evil.into()],
            etag: evil.into(),
            app_id: evil.into(),
            expire_time: evil.into(),
        };
        let catalog = [pb::Permission { name: evil.into(), category: evil.into(), description: evil.into() }];
        let errors = [("display_name".to_owned(), evil.to_owned()), ("form".to_owned(), evil.to_owned())];
        let usage = pb::GetApiKeyUsageResponse {
            exercised: vec![evil.into()],
            never_exercised: vec![evil.into()],
            ..Default::default()
        };
        let chrome =
            Chrome { name: evil.into(), kind: "user", csrf: evil.into(), held: vec![evil.into()], proxied: false };
        for page in [
            key_form(&chrome, &catalog, &form, &errors),
            credentials(&chrome, evil, &key, evil, evil),
            confirm(&chrome, &key, Action::Delete, Some(evil)),
            usage_page(&chrome, &key, &usage),
            message(evil, evil),
            login(Some(evil)),
            list(
                &chrome,
                &catalog,
                &ListFilter { name: evil.into(), permission: evil.into(), page_token: evil.into(), show_deleted: true },
                std::slice::from_ref(&key),
                evil,
                Some(evil),
            ),
        ] {
            assert!(!page.contains("<script>alert") && !page.contains("'>"), "{page}");
        }
    }
}
