//! The consumer side of usage tracking: the requests a consumer's auth layer admits (cache hits
//! included, which never reach apikeys) are noted in a [`UsageLog`] (one entry per key, so memory
//! is bounded by the keys in use) and sent to apikeys' `ReportKeyUsage` in batches of at most
//! [`MAX_BATCH`], every [`UsageReport::interval`] (a minute by default), with a credential of the
//! consumer's own that holds `api_keys_usage_report`.
//!
//! A report that fails (apikeys down, the credential refused) is kept and sent with the next one,
//! merged with what happened meanwhile; nothing is lost unless the process dies, and then at most
//! one interval. Call [`super::RemoteAuthenticator::flush_usage`] on graceful shutdown.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use prost::Message as _;
use tonic::metadata::MetadataValue;

use super::{Credential, watch::AbortOnDrop};
use crate::{
    error::{Error, Result},
    pb::{KeyUsage, ReportKeyUsageRequest, api_key_service_client::ApiKeyServiceClient},
    replicas::RetryUnsent,
    usage::{Seen, UsageLog},
};

/// Most entries in one `ReportKeyUsage` call (apikeys refuses more).
pub const MAX_BATCH: usize = 1000;
/// Most bytes of entries in one call: half of apikeys' default request limit (64 KiB), so a
/// report fits whatever the user agents and permissions weigh.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;

/// Default time between two reports.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Settings of usage reporting (`RemoteConfig::usage_report`).
#[derive(Debug, Clone)]
pub struct UsageReport {
    /// The consumer's own credential, holding `api_keys_usage_report`. Only keys of its
    /// organization are recorded.
    pub credential: Credential,
    /// Time between two reports.
    pub interval: Duration,
}

impl UsageReport {
    /// Reports with `credential` every [`DEFAULT_REPORT_INTERVAL`].
    pub fn new(credential: Credential) -> Self {
        Self { credential, interval: DEFAULT_REPORT_INTERVAL }
    }
}

/// Notes uses and sends them; see the module docs.
#[derive(Debug)]
pub struct Reporter {
    log: UsageLog,
    client: ApiKeyServiceClient<RetryUnsent>,
    credential: Credential,
    timeout: Duration,
}

impl Reporter {
    /// A reporter sending with `client` under `config`, each call with deadline `timeout`.
    pub fn new(client: ApiKeyServiceClient<RetryUnsent>, config: &UsageReport, timeout: Duration) -> Self {
        Self { log: UsageLog::new(true), client, credential: config.credential.clone(), timeout }
    }

    /// The uses waiting to be sent.
    pub fn log(&self) -> &UsageLog {
        &self.log
    }

    /// Sends every pending use, in batches of at most [`MAX_BATCH`] entries and about
    /// [`MAX_BATCH_BYTES`]; returns how many entries apikeys recorded. Entries not sent are kept
    /// for the next call.
    ///
    /// # Errors
    /// UNAVAILABLE (apikeys unreachable), UNAUTHENTICATED or PERMISSION_DENIED (the report
    /// credential is not valid or lacks `api_keys_usage_report`), INTERNAL.
    pub async fn flush(&self) -> Result<usize> {
        let mut rest = self.log.take();
        let mut accepted = 0;
        while !rest.is_empty() {
            let (usages, size) = batch(&rest);
            let tail = rest.split_off(size);
            match self.send(usages).await {
                Ok(count) => {
                    self.log.count_statements(1);
                    accepted += count;
                    rest = tail;
                }
                // Refused for what it holds: sending it again cannot help.
                Err(Error::InvalidArgument(_)) => {
                    tracing::warn!(dropped = rest.len(), "apikeys refused a usage report as malformed; dropped it");
                    rest = tail;
                }
                Err(error) => {
                    rest.extend(tail);
                    self.log.merge(rest);
                    return Err(error);
                }
            }
        }
        Ok(accepted)
    }

    async fn send(&self, usages: Vec<KeyUsage>) -> Result<usize> {
        let mut request = tonic::Request::new(ReportKeyUsageRequest { usages });
        request.set_timeout(self.timeout);
        let mut authorization: MetadataValue<_> = format!("Bearer {}", self.credential.token())
            .parse()
            .map_err(|_| Error::internal("a token is not a valid header value"))?;
        authorization.set_sensitive(true);
        request.metadata_mut().insert("authorization", authorization);
        let mut client = self.client.clone();
        let response = match tokio::time::timeout(self.timeout, client.report_key_usage(request)).await {
            Ok(result) => result.map_err(report_error)?.into_inner(),
            Err(_) => return Err(Error::Unavailable("apikeys")),
        };
        if response.ignored_count > 0 {
            tracing::warn!(
                ignored = response.ignored_count,
                "apikeys ignored uses of keys unknown to it, of another organization than the report credential's, \
                 or administering apikeys"
            );
        }
        Ok(usize::try_from(response.accepted_count).unwrap_or_default())
    }

    /// Sends reports every `interval` on a task of the current runtime, until the reporter is
    /// dropped.
    pub fn spawn(self: &Arc<Self>, runtime: &tokio::runtime::Handle, interval: Duration) -> AbortOnDrop {
        let reporter: Weak<Self> = Arc::downgrade(self);
        AbortOnDrop(runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(reporter) = reporter.upgrade() else { return };
                if let Err(error) = reporter.flush().await {
                    tracing::warn!(%error, "could not report key usage to apikeys; will retry");
                }
            }
        }))
    }
}

/// The entries of the next report, from the front of `pending`, and how many they are.
fn batch(pending: &[(uuid::Uuid, Seen)]) -> (Vec<KeyUsage>, usize) {
    let mut usages = Vec::new();
    let mut bytes = 0;
    for (id, seen) in pending.iter().take(MAX_BATCH) {
        let usage = KeyUsage {
            key_id: id.to_string(),
            last_used_time: Some(seen.time.into()),
            last_used_address: seen.address.map(|a| a.to_string()).unwrap_or_default(),
            last_used_agent: seen.agent.clone(),
            exercised_permissions: seen.exercised.keys().cloned().collect(),
        };
        // Field tag and length prefix included.
        let size = usage.encoded_len() + 4;
        if !usages.is_empty() && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        usages.push(usage);
    }
    let count = usages.len();
    (usages, count)
}

fn report_error(status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::Unauthenticated => Error::Unauthenticated,
        tonic::Code::PermissionDenied => Error::MissingPermissions(vec!["api_keys_usage_report".to_owned()]),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Error::Unavailable("apikeys")
        }
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
            Error::invalid("usages", format!("apikeys refused the report: {}", status.message()))
        }
        code => Error::internal(format!("apikeys answered {code:?}: {}", status.message())),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::SystemTime};

    use super::*;

    fn pending(n: usize, agent: &str) -> Vec<(uuid::Uuid, Seen)> {
        let seen = Seen { time: SystemTime::now(), address: None, agent: agent.into(), exercised: HashMap::new() };
        (0..n).map(|_| (uuid::Uuid::new_v4(), seen.clone())).collect()
    }

    #[test]
    fn batches_stay_under_the_entry_and_byte_limits() {
        let (usages, count) = batch(&pending(1500, "a"));
        assert!(count > 500 && count <= MAX_BATCH, "{count}");
        assert!(ReportKeyUsageRequest { usages }.encoded_len() <= MAX_BATCH_BYTES);
        let heavy = pending(1500, &"x".repeat(200));
        let (usages, count) = batch(&heavy);
        let bytes = ReportKeyUsageRequest { usages }.encoded_len();
        assert!(count > 50 && count < MAX_BATCH, "{count}");
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes} bytes");
        assert_eq!(batch(&heavy[..1]).1, 1);
    }
}
