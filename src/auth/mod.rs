//! Authentication: credentials and their formats, the cache of verified credentials, the
//! [`Authenticator`] abstraction with its remote (client) and in-process (server) implementations,
//! argon2 hashing (server), and the tower layer that protects a service.
//!
//! apikeys' own admin RPCs and every consumer service go through the same [`layer::AuthLayer`]; only
//! the authenticator behind it differs.

use std::{future::Future, net::IpAddr};

pub mod cache;
pub mod credential;
pub mod flight;
#[cfg(feature = "server")]
pub mod hashing;
#[cfg(feature = "server")]
pub mod jwt;
pub mod layer;
#[cfg(feature = "server")]
pub mod local;
pub mod remote;
pub mod report;
pub mod restrictions;
pub mod watch;

pub use credential::{Credential, MalformedCredential, Secret};
pub use layer::{AccessPolicy, AuthLayer};
pub use remote::RemoteAuthenticator;

use crate::error::Result;
pub use crate::pb::Principal;
use restrictions::RateLimiter;

/// Turns a credential into the principal it belongs to.
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `credential`.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown key or a wrong secret (one answer for both), `HashingBusy`
    /// when verification capacity is exhausted, `Unavailable` when the backend cannot be reached.
    fn authenticate(&self, credential: Credential) -> impl Future<Output = Result<Principal>> + Send;

    /// Verifies a bearer `token` that is not an API key token but has the shape of a JWT: a
    /// person's platform-issued JWT. By default none is accepted (consumer services take API keys;
    /// apikeys' own admin RPCs take people too, see [`jwt`]).
    ///
    /// # Errors
    /// `Unauthenticated` for a token that is not accepted.
    fn authenticate_bearer(&self, token: &str) -> impl Future<Output = Result<Principal>> + Send {
        let _ = token;
        std::future::ready(Err(crate::Error::Unauthenticated))
    }

    /// Told by the auth layer of each request it admitted: `principal`'s key was used from `client`
    /// by `agent` (the request's user agent) for a request requiring `required`. Must not block;
    /// by default nothing happens (the remote authenticator notes it for its usage reports).
    fn admitted(&self, principal: &Principal, client: Option<IpAddr>, agent: &str, required: &[String]) {
        let _ = (principal, client, agent, required);
    }
}

impl<A: Authenticator> Authenticator for std::sync::Arc<A> {
    fn authenticate(&self, credential: Credential) -> impl Future<Output = Result<Principal>> + Send {
        (**self).authenticate(credential)
    }

    fn authenticate_bearer(&self, token: &str) -> impl Future<Output = Result<Principal>> + Send {
        (**self).authenticate_bearer(token)
    }

    fn admitted(&self, principal: &Principal, client: Option<IpAddr>, agent: &str, required: &[String]) {
        (**self).admitted(principal, client, agent, required);
    }
}

/// The permissions of `wanted` that `held` does not contain, in the order given, without duplicates:
/// the one set difference behind every permission rule (required by a method, granted by an admin,
/// held by a key being managed). `held` must be sorted (apikeys always keeps permissions sorted).
pub fn lacking<'a>(held: &[String], wanted: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    wanted
        .into_iter()
        .filter(|name| held.binary_search_by(|p| p.as_str().cmp(name)).is_err() && seen.insert(*name))
        .map(str::to_owned)
        .collect()
}

/// Verifies `credential` with `authenticator` and admits its principal for a request from `client`
/// ([`admit`]): the check the auth layer runs for every protected request.
///
/// # Errors
/// What the authenticator returns, then what [`admit`] returns.
pub async fn authorize<A: Authenticator, S: AsRef<str>>(
    authenticator: &A,
    credential: Credential,
    required: &[S],
    client: Option<IpAddr>,
    limiter: &RateLimiter,
) -> Result<Principal> {
    admit(authenticator.authenticate(credential).await?, required, client, Some(limiter))
}

/// The checks after a credential is verified, in their documented order: the network (`client`
/// against the principal's `allowed_cidrs`), the permissions (`required`), then the rate (counted
/// by `limiter`, if given, only for a request that passed the rest).
///
/// # Errors
/// PERMISSION_DENIED (`SOURCE_NOT_ALLOWED`, `MISSING_PERMISSIONS`), RESOURCE_EXHAUSTED
/// (`RATE_LIMITED`).
pub fn admit<S: AsRef<str>>(
    principal: Principal,
    required: &[S],
    client: Option<IpAddr>,
    limiter: Option<&RateLimiter>,
) -> Result<Principal> {
    check_admission(&principal, required, client, limiter)?;
    Ok(principal)
}

/// [`admit`] of a borrowed principal (a cached one, answered without a copy).
///
/// # Errors
/// As [`admit`].
pub fn check_admission<S: AsRef<str>>(
    principal: &Principal,
    required: &[S],
    client: Option<IpAddr>,
    limiter: Option<&RateLimiter>,
) -> Result<()> {
    restrictions::check_source(&principal.allowed_cidrs, client)?;
    check_permissions(principal, required)?;
    if let Some(limiter) = limiter {
        limiter.check(principal)?;
    }
    Ok(())
}

/// Whether `principal` holds every permission in `required`: the one permission check of the auth
/// layer and of the Authenticate RPC.
///
/// # Errors
/// PERMISSION_DENIED naming the missing permissions.
pub fn check_permissions<S: AsRef<str>>(principal: &Principal, required: &[S]) -> Result<()> {
    let missing = lacking(&principal.permissions, required.iter().map(AsRef::as_ref));
    if missing.is_empty() { Ok(()) } else { Err(crate::Error::MissingPermissions(missing)) }
}
