//! The one error type of apikeys and its one mapping to `tonic::Status` (AIP-193: canonical code, an
//! `ErrorInfo` with an UPPER_SNAKE reason in the `apikeys` domain, `BadRequest` field violations).
//!
//! Messages never contain secrets, tokens or hashes: variants carry only what is safe to show the
//! caller. Unexpected failures are logged here with their cause and answered with a generic message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error apikeys returns.
pub const ERROR_DOMAIN: &str = "apikeys";

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path as in the proto, e.g. `display_name` or `permissions[2]`.
    pub field: String,
    /// What is wrong with it, for people.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Everything that can go wrong in apikeys, each variant with a fixed gRPC code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT, reason `INVALID_ARGUMENT`: the request names bad fields.
    #[error("invalid argument: {}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// UNAUTHENTICATED, reason `UNAUTHENTICATED`: missing, malformed or wrong credentials. One message
    /// for every cause, so a caller cannot tell an unknown key from a wrong secret.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// PERMISSION_DENIED, reason `MISSING_PERMISSIONS`: the principal lacks the named permissions.
    #[error("missing permissions: {}", list(.0))]
    MissingPermissions(Vec<String>),
    /// PERMISSION_DENIED, reason `PERMISSION_ESCALATION`: granting permissions the caller lacks.
    #[error("cannot grant permissions the caller does not hold: {}", list(.0))]
    Escalation(Vec<String>),
    /// PERMISSION_DENIED, reason `PERMISSION_ESCALATION`: managing a key that holds permissions the
    /// caller lacks.
    #[error("cannot manage a key holding permissions the caller does not hold: {}", list(.0))]
    KeyOutranksCaller(Vec<String>),
    /// PERMISSION_DENIED, reason `SOURCE_NOT_ALLOWED`: the client address is not in the key's
    /// `allowed_cidrs` (or unknown). The credential was right.
    #[error("this API key may not be used from this address")]
    SourceNotAllowed,
    /// RESOURCE_EXHAUSTED, reason `RATE_LIMITED`, with `RetryInfo`: the key's rate limit is spent
    /// for now; a request after the delay is allowed.
    #[error("this API key's rate limit is exceeded; retry in {} ms", .0.as_millis().max(1))]
    RateLimited(std::time::Duration),
    /// PERMISSION_DENIED, reason `NOT_IN_ACCESS_POLICY`: the auth layer's policy does not list the
    /// method, so it is refused (fail closed).
    #[error("this method is not covered by the service's access policy")]
    NotInPolicy,
    /// NOT_FOUND, reason `API_KEY_NOT_FOUND`.
    #[error("API key {0} not found")]
    KeyNotFound(String),
    /// ALREADY_EXISTS, reason `DISPLAY_NAME_TAKEN`.
    #[error("an API key named {0:?} already exists in this organization")]
    DisplayNameTaken(String),
    /// ALREADY_EXISTS, reason `DISPLAY_NAME_TAKEN`: undeleting a key whose display name another
    /// key took meanwhile; names that key (also in the `holder_id` metadata).
    #[error("an API key named {name:?} already exists in this organization: {holder_id}; rename one of them first")]
    DisplayNameHeld {
        /// The display name.
        name: String,
        /// The key holding it now.
        holder_id: String,
    },
    /// FAILED_PRECONDITION, reason `API_KEY_DELETED`: changing a deleted key.
    #[error("API key {0} is deleted; undelete it (UndeleteApiKey) before changing it")]
    KeyDeleted(String),
    /// FAILED_PRECONDITION, reason `API_KEY_NOT_DELETED`: undeleting a key that is not deleted.
    #[error("API key {0} is not deleted")]
    KeyNotDeleted(String),
    /// ABORTED, reason `ETAG_MISMATCH`: stale etag or a concurrent change.
    #[error("the API key was changed since etag was read; read it again and retry")]
    EtagMismatch,
    /// FAILED_PRECONDITION, reason `APP_MANAGED_KEY`: the change could break the owning app.
    #[error(
        "API key {key_id} is managed by app {app_id:?}; {action} may stop the app from working. \
         Set acknowledge_app_impact to proceed"
    )]
    AppManagedKey {
        /// The key.
        key_id: String,
        /// The owning app.
        app_id: String,
        /// What was attempted, e.g. "changing its permissions".
        action: &'static str,
    },
    /// FAILED_PRECONDITION, reason `ORG_EXISTS`: an organization of that name exists (bootstrap).
    #[error("organization {0:?} already exists")]
    OrgExists(String),
    /// RESOURCE_EXHAUSTED, reason `PEER_BUSY`: the caller's address has as many calls in flight as
    /// one address may have.
    #[error("too many calls in flight from this address; retry with backoff")]
    PeerBusy,
    /// RESOURCE_EXHAUSTED, reason `TOO_MANY_FAILURES`: the caller's address spent its budget of
    /// failed authentications; credentials not in the cache are refused for a while.
    #[error("too many failed authentications from this address; retry later")]
    TooManyFailures,
    /// RESOURCE_EXHAUSTED, reason `TOO_MANY_WATCHERS`: as many WatchKeyChanges streams are open as
    /// the server allows.
    #[error("too many change streams are open; retry with backoff")]
    TooManyWatchers,
    /// RESOURCE_EXHAUSTED, reason `HASHING_BUSY`: the argon2 wait queue is full.
    #[error("too many credential checks in progress; retry with backoff")]
    HashingBusy,
    /// UNAVAILABLE, reason `BACKEND_UNAVAILABLE`: the database or an upstream service cannot be reached.
    #[error("{0} is unavailable; retry with backoff")]
    Unavailable(&'static str),
    /// INTERNAL, reason `INTERNAL`: a bug or an unexpected backend error. The cause is logged, not
    /// returned.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// A single-field INVALID_ARGUMENT.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// An INTERNAL error whose cause is logged (never returned to the caller).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::MissingPermissions(_)
            | Self::Escalation(_)
            | Self::KeyOutranksCaller(_)
            | Self::NotInPolicy
            | Self::SourceNotAllowed => Code::PermissionDenied,
            Self::KeyNotFound(_) => Code::NotFound,
            Self::DisplayNameTaken(_) | Self::DisplayNameHeld { .. } => Code::AlreadyExists,
            Self::EtagMismatch => Code::Aborted,
            Self::AppManagedKey { .. } | Self::OrgExists(_) | Self::KeyDeleted(_) | Self::KeyNotDeleted(_) => {
                Code::FailedPrecondition
            }
            Self::HashingBusy
            | Self::PeerBusy
            | Self::TooManyWatchers
            | Self::TooManyFailures
            | Self::RateLimited(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The AIP-193 `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::MissingPermissions(_) => "MISSING_PERMISSIONS",
            Self::Escalation(_) | Self::KeyOutranksCaller(_) => "PERMISSION_ESCALATION",
            Self::NotInPolicy => "NOT_IN_ACCESS_POLICY",
            Self::SourceNotAllowed => "SOURCE_NOT_ALLOWED",
            Self::RateLimited(_) => "RATE_LIMITED",
            Self::KeyNotFound(_) => "API_KEY_NOT_FOUND",
            Self::DisplayNameTaken(_) | Self::DisplayNameHeld { .. } => "DISPLAY_NAME_TAKEN",
            Self::KeyDeleted(_) => "API_KEY_DELETED",
            Self::KeyNotDeleted(_) => "API_KEY_NOT_DELETED",
            Self::EtagMismatch => "ETAG_MISMATCH",
            Self::AppManagedKey { .. } => "APP_MANAGED_KEY",
            Self::OrgExists(_) => "ORG_EXISTS",
            Self::HashingBusy => "HASHING_BUSY",
            Self::PeerBusy => "PEER_BUSY",
            Self::TooManyWatchers => "TOO_MANY_WATCHERS",
            Self::TooManyFailures => "TOO_MANY_FAILURES",
            Self::Unavailable(_) => "BACKEND_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

/// Most field violations named in a message or in `BadRequest` details: an answer must fit the
/// 16 KiB of headers that gRPC clients accept, whatever the request held (a status travels in
/// headers, so 10 000 bad entries must not mean 10 000 lines of trailers).
pub const MAX_VIOLATIONS_SHOWN: usize = 10;
/// Longest message, violation field or description, or metadata value, in bytes; longer ones are
/// cut (a description may quote the bad input).
pub const MAX_DETAIL_BYTES: usize = 256;
/// Longest status message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// `text` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// A list of names for a message: at most [`MAX_VIOLATIONS_SHOWN`], each clipped, then how many more.
fn list(names: &[String]) -> String {
    let shown: Vec<_> = names.iter().take(MAX_VIOLATIONS_SHOWN).map(|n| clip(n, MAX_DETAIL_BYTES)).collect();
    match names.len().saturating_sub(MAX_VIOLATIONS_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    let shown: Vec<String> = violations
        .iter()
        .take(MAX_VIOLATIONS_SHOWN)
        .map(|v| format!("{}: {}", clip(&v.field, MAX_DETAIL_BYTES), clip(&v.description, MAX_DETAIL_BYTES)))
        .collect();
    match violations.len().saturating_sub(MAX_VIOLATIONS_SHOWN) {
        0 => shown.join("; "),
        more => format!("{}; and {more} more", shown.join("; ")),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let mut metadata = HashMap::new();
        match &error {
            Error::Internal(cause) => tracing::error!(%cause, "internal error"),
            Error::MissingPermissions(names) | Error::Escalation(names) | Error::KeyOutranksCaller(names) => {
                metadata.insert("permissions".to_owned(), clip(&names.join(","), 4 * MAX_DETAIL_BYTES).into_owned());
            }
            Error::AppManagedKey { app_id, .. } => {
                metadata.insert("app_id".to_owned(), clip(app_id, MAX_DETAIL_BYTES).into_owned());
            }
            Error::DisplayNameHeld { holder_id, .. } => {
                metadata.insert("holder_id".to_owned(), holder_id.clone());
            }
            _ => {}
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(error.reason(), ERROR_DOMAIN, metadata);
        if let Error::RateLimited(wait) = &error {
            details.set_retry_info(Some(*wait));
        }
        if let Error::InvalidArgument(violations) = &error {
            for v in violations.iter().take(MAX_VIOLATIONS_SHOWN) {
                details.add_bad_request_violation(
                    clip(&v.field, MAX_DETAIL_BYTES),
                    clip(&v.description, MAX_DETAIL_BYTES),
                );
            }
        }
        Status::with_error_details(error.code(), clip(&error.to_string(), MAX_MESSAGE_BYTES), details)
    }
}

/// The canonical UPPER_SNAKE name of a gRPC code, as the API documentation uses it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Reads the AIP-193 reason back from a status returned by apikeys (empty if there is none).
pub fn status_reason(status: &Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt as _;

    use super::*;

    #[test]
    fn clipping_cuts_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(100);
        let cut = clip(&long, 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn a_status_fits_in_headers_whatever_the_request_held() {
        let violations =
            (0..10_000).map(|i| FieldViolation::new(format!("permissions[{i}]"), "x".repeat(10_000))).collect();
        let status = Status::from(Error::InvalidArgument(violations));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with('…') || status.message().contains("more"), "{}", status.message());
        let shown = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(shown.len(), MAX_VIOLATIONS_SHOWN);
        assert!(shown.iter().all(|v| v.description.len() <= MAX_DETAIL_BYTES));
        assert!(status.details().len() < 8 * 1024, "{} bytes of details", status.details().len());

        let names: Vec<String> = (0..256).map(|i| format!("{i}{}", "p".repeat(60))).collect();
        let status = Status::from(Error::MissingPermissions(names));
        assert!(status.message().contains("and 246 more"), "{}", status.message());
        assert!(status.details().len() < 8 * 1024);
    }
}
