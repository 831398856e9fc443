//! Authentication: credentials and their formats, the cache of verified credentials, the
//! [`Authenticator`] abstraction with its remote (client) and in-process (server) implementations,
//! argon2 hashing (server), and the tower layer that protects a service.
//!
//! apikeys' own admin RPCs and every consumer service go through the same [`layer::AuthLayer`]; only
//! the authenticator behind it differs.

use std::future::Future;

pub mod cache;
pub mod credential;
#[cfg(feature = "server")]
pub mod hashing;
pub mod layer;
#[cfg(feature = "server")]
pub mod local;
pub mod remote;

pub use credential::{Credential, MalformedCredential, Secret};
pub use layer::{AccessPolicy, AuthLayer};
pub use remote::RemoteAuthenticator;

use crate::error::Result;
pub use crate::pb::Principal;

/// Turns a credential into the principal it belongs to.
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `credential`.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown key or a wrong secret (one answer for both), `HashingBusy`
    /// when verification capacity is exhausted, `Unavailable` when the backend cannot be reached.
    fn authenticate(&self, credential: Credential) -> impl Future<Output = Result<Principal>> + Send;
}

impl<A: Authenticator> Authenticator for std::sync::Arc<A> {
    fn authenticate(&self, credential: Credential) -> impl Future<Output = Result<Principal>> + Send {
        (**self).authenticate(credential)
    }
}

/// The permissions of `required` that `principal` does not hold, in the order given, without
/// duplicates. `principal.permissions` must be sorted (apikeys always sends them sorted).
pub fn missing_permissions<S: AsRef<str>>(principal: &Principal, required: &[S]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut missing: Vec<String> = Vec::new();
    for name in required {
        let name = name.as_ref();
        let held = principal.permissions.binary_search_by(|p| p.as_str().cmp(name)).is_ok();
        if !held && seen.insert(name) {
            missing.push(name.to_owned());
        }
    }
    missing
}
