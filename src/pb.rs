//! The code generated from `proto/` by `build.rs`, included once, plus the descriptor set that
//! server reflection serves and the hand-written `Debug` impls that keep secrets out of logs.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `apikeys.v1`: the API key service contract.
pub mod apikeys {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("apikeys.v1");
    }
}

pub use apikeys::v1::*;

/// Encoded `FileDescriptorSet` of `apikeys.v1` and its imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/apikeys_descriptor.bin"));

const REDACTED: &str = "<redacted>";

fn redact(value: &str) -> &'static str {
    if value.is_empty() { "" } else { REDACTED }
}

impl std::fmt::Debug for CreateApiKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateApiKeyResponse")
            .field("api_key", &self.api_key)
            .field("secret", &redact(&self.secret))
            .field("token", &redact(&self.token))
            .finish()
    }
}

impl std::fmt::Debug for RegenerateApiKeySecretResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegenerateApiKeySecretResponse")
            .field("api_key", &self.api_key)
            .field("secret", &redact(&self.secret))
            .field("token", &redact(&self.token))
            .finish()
    }
}

impl Principal {
    /// Whether this is a person (a platform JWT's user), not an API key account.
    pub fn is_person(&self) -> bool {
        self.principal_type() == PrincipalType::User
    }
}

impl std::fmt::Debug for AuthenticateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticateRequest")
            .field("key_id", &self.key_id)
            .field("secret", &redact(&self.secret))
            .field("token", &redact(&self.token))
            .field("required_permissions", &self.required_permissions)
            .finish()
    }
}

/// A protobuf timestamp of `time` (nanosecond precision).
#[cfg(feature = "server")]
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
