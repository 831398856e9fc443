//! The permission catalog: data, not code. The default ships as `permissions.toml` beside this file;
//! a deployment replaces it with its own file of the same format.

use std::collections::BTreeSet;

use serde::Deserialize;

/// The permission that the admin RPCs require ("API Keys" administration).
pub const ADMIN_PERMISSION: &str = "api_keys_admin";
/// The permission ReportKeyUsage requires: held by consumer services' report credentials, so
/// reporting uses does not take admin rights.
pub const USAGE_REPORT_PERMISSION: &str = "api_keys_usage_report";

const DEFAULT_CATALOG: &str = include_str!("permissions.toml");

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// Handle stored on keys, e.g. `read_data`.
    pub name: String,
    /// Heading in admin UIs.
    pub category: String,
    /// Explanation for people.
    pub description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    permission: Vec<Permission>,
}

/// The set of permissions keys may hold, ordered by category then name.
#[derive(Debug, Clone)]
pub struct Catalog {
    permissions: Vec<Permission>,
    names: BTreeSet<String>,
}

impl Catalog {
    /// The catalog shipped with apikeys.
    ///
    /// # Errors
    /// Only if the shipped file is broken (a build defect caught by tests).
    pub fn builtin() -> Result<Self, String> {
        Self::parse(DEFAULT_CATALOG)
    }

    /// Reads a catalog file.
    ///
    /// # Errors
    /// A message naming the file and the problem.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read permissions file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("permissions file {}: {e}", path.display()))
    }

    /// Parses and checks catalog TOML: names are `[a-z][a-z0-9_.:-]*` up to 64 characters, unique, and
    /// [`ADMIN_PERMISSION`] is present.
    ///
    /// # Errors
    /// A message describing the first problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = BTreeSet::new();
        for p in &file.permission {
            if !is_permission_name(&p.name) {
                return Err(format!("invalid permission name {:?}: use [a-z][a-z0-9_.:-]*, at most 64", p.name));
            }
            if !names.insert(p.name.clone()) {
                return Err(format!("permission {:?} is listed twice", p.name));
            }
        }
        if !names.contains(ADMIN_PERMISSION) {
            return Err(format!("the catalog must contain {ADMIN_PERMISSION:?}, which the admin RPCs require"));
        }
        let mut permissions = file.permission;
        permissions.sort_by(|a, b| (&a.category, &a.name).cmp(&(&b.category, &b.name)));
        Ok(Self { permissions, names })
    }

    /// Every permission, ordered by category then name.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// Whether `name` is in the catalog.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Every permission name, sorted.
    pub fn all_names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }
}

/// Whether `name` has the syntax of a permission handle: `[a-z][a-z0-9_.:-]*`, at most 64 characters.
pub fn is_permission_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_soar_handles_and_the_admin_permission() {
        let catalog = Catalog::builtin().unwrap();
        for name in [
            "read_data",
            "read_function",
            "create_incident",
            "read_all_incidents",
            "edit_all_incidents_fields",
            "edit_data",
            "read_playbook",
            ADMIN_PERMISSION,
        ] {
            assert!(catalog.contains(name), "{name}");
        }
    }

    #[test]
    fn bad_catalogs_are_rejected_with_a_reason() {
        let admin = "[[permission]]\nname = \"api_keys_admin\"\ncategory = \"A\"\ndescription = \"\"\n";
        assert!(Catalog::parse("").unwrap_err().contains("permission"));
        assert!(Catalog::parse(&format!("{admin}{admin}")).unwrap_err().contains("twice"));
        let bad = admin.replace("api_keys_admin", "Bad Name");
        assert!(Catalog::parse(&bad).unwrap_err().contains("invalid permission name"));
        let no_admin = admin.replace("api_keys_admin", "read_data");
        assert!(Catalog::parse(&no_admin).unwrap_err().contains(ADMIN_PERMISSION));
        assert!(Catalog::parse(&format!("{admin}extra = 1")).is_err());
    }
}
