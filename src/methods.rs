//! The RPCs this server serves, one row each: the gRPC path (built on the generated service names)
//! and who may call it. The access policy of the auth layer and the `method` label of the RPC
//! metrics both read this table, so adding an RPC is adding a row; a test fails if the contract has
//! an RPC without one.

use std::sync::LazyLock;

use crate::{
    auth::AccessPolicy,
    domain::{ADMIN_PERMISSION, USAGE_REPORT_PERMISSION},
    pb::api_key_service_server::SERVICE_NAME,
};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Public,
    /// A credential holding [`ADMIN_PERMISSION`].
    Admin,
    /// A credential holding [`USAGE_REPORT_PERMISSION`] (a consumer service reporting uses).
    Report,
}

/// One RPC of this server.
#[derive(Debug)]
pub struct Method {
    /// `/package.Service/Method`; also its metric label.
    pub path: String,
    /// Who may call it.
    pub access: Access,
}

/// `apikeys.v1.ApiKeyService`, by method name.
const API: &[(&str, Access)] = &[
    ("CreateApiKey", Access::Admin),
    ("GetApiKey", Access::Admin),
    ("ListApiKeys", Access::Admin),
    ("UpdateApiKey", Access::Admin),
    ("RegenerateApiKeySecret", Access::Admin),
    ("DeleteApiKey", Access::Admin),
    ("Authenticate", Access::Public),
    ("ListPermissions", Access::Public),
    ("UnlockApiKey", Access::Admin),
    ("GetOrgPolicy", Access::Admin),
    ("UpdateOrgPolicy", Access::Admin),
    ("WatchKeyChanges", Access::Public),
    ("DisableApiKey", Access::Admin),
    ("EnableApiKey", Access::Admin),
    ("ListAuditEvents", Access::Admin),
    ("UndeleteApiKey", Access::Admin),
    ("WatchAuditEvents", Access::Admin),
    ("GetApiKeyUsage", Access::Admin),
    ("ReportKeyUsage", Access::Report),
];

/// Health and reflection, by service and method.
const INFRASTRUCTURE: &[(&str, &str)] = &[
    (tonic_health::pb::health_server::SERVICE_NAME, "Check"),
    (tonic_health::pb::health_server::SERVICE_NAME, "Watch"),
    (tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME, "ServerReflectionInfo"),
    (tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME, "ServerReflectionInfo"),
];

static METHODS: LazyLock<Vec<Method>> = LazyLock::new(|| {
    let api = API.iter().map(|(name, access)| Method { path: format!("/{SERVICE_NAME}/{name}"), access: *access });
    let infrastructure = INFRASTRUCTURE
        .iter()
        .map(|(service, name)| Method { path: format!("/{service}/{name}"), access: Access::Public });
    api.chain(infrastructure).collect()
});

/// Every RPC this server serves.
pub fn all() -> &'static [Method] {
    &METHODS
}

/// The path of `name` in `apikeys.v1.ApiKeyService`, e.g. `/apikeys.v1.ApiKeyService/Authenticate`.
pub fn api_path(name: &str) -> String {
    format!("/{SERVICE_NAME}/{name}")
}

/// Each method's position in [`all`] by its path, for [`find`] (once per RPC: a hash lookup, not a
/// scan).
static POSITIONS: LazyLock<std::collections::HashMap<&'static str, usize, foldhash::fast::RandomState>> =
    LazyLock::new(|| all().iter().enumerate().map(|(i, m)| (m.path.as_str(), i)).collect());

/// The position in [`all`] of the method at `path`, if this server serves it.
pub fn find(path: &str) -> Option<usize> {
    POSITIONS.get(path).copied()
}

/// The metric label of the method at `position` in [`all`] (from [`find`]): its path, or `unknown`
/// for none, so a client cannot inflate the number of series.
pub fn label(position: Option<usize>) -> &'static str {
    position.and_then(|i| all().get(i)).map_or("unknown", |m| m.path.as_str())
}

/// The access policy of apikeys itself, from the table: admin RPCs need [`ADMIN_PERMISSION`],
/// usage reports [`USAGE_REPORT_PERMISSION`], the rest are public; anything else is refused.
pub fn access_policy() -> AccessPolicy {
    all().iter().fold(AccessPolicy::new(), |policy, method| match method.access {
        Access::Public => policy.public(&method.path),
        Access::Admin => policy.require(&method.path, [ADMIN_PERMISSION]),
        Access::Report => policy.require(&method.path, [USAGE_REPORT_PERMISSION]),
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn every_rpc_of_the_contract_has_a_row() {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
            .find(|(package, s)| format!("{package}.{}", s.name()) == SERVICE_NAME)
            .map(|(_, s)| s)
            .unwrap();
        for rpc in &service.method {
            let path = api_path(rpc.name());
            assert_eq!(label(find(&path)), path, "{} has no row in the method table", rpc.name());
        }
        assert_eq!(API.len(), service.method.len(), "rows for RPCs the contract does not have");
        assert_eq!(find("/apikeys.v1.ApiKeyService/Nope"), None);
        assert_eq!(label(None), "unknown");
    }
}
