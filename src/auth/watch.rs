//! The consumer side of revocation: a task that follows apikeys' `WatchKeyChanges` stream and drops
//! the changed keys' entries from a [`VerifiedCache`].
//!
//! It resumes after a disconnect with the last cursor it saw, so changes made meanwhile still reach
//! it (or it is told to reset and drops everything). While the stream is down the cache falls back
//! to its TTL; [`WatchStats::connected`] says which of the two bounds holds now. A stream silent for
//! three heartbeats is treated as broken (a half-open connection delivers nothing and says nothing).

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::cache::{KeyDigest, VerifiedCache};
use crate::{
    pb::{WatchKeyChangesRequest, api_key_service_client::ApiKeyServiceClient},
    replicas::RetryUnsent,
};

/// apikeys sends an empty message this often while nothing changes.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Counters of one watcher, for the consumer's metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Whether the stream is open (revocations arrive within about a second); false: the cache TTL
    /// is the bound.
    pub connected: AtomicBool,
    /// Times the stream was opened.
    pub connects: AtomicU64,
    /// Key changes received.
    pub changes: AtomicU64,
    /// Resets received (every cached entry dropped).
    pub resets: AtomicU64,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the change stream of the apikeys behind `client` until `cache` is dropped; see the
/// module docs.
pub async fn follow(client: ApiKeyServiceClient<RetryUnsent>, cache: Weak<VerifiedCache>, stats: Arc<WatchStats>) {
    let mut cursor = String::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = WatchKeyChangesRequest { cursor: cursor.clone() };
        if let Ok(response) = client.clone().watch_key_changes(request).await {
            let mut stream = response.into_inner();
            while let Ok(Ok(Some(message))) = tokio::time::timeout(HEARTBEAT * 3, stream.message()).await {
                let Some(cache) = cache.upgrade() else { return };
                if !stats.connected.swap(true, Ordering::Relaxed) {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("following apikeys key changes");
                    backoff = Duration::from_millis(100);
                }
                // Without a cursor, changes before this moment were never seen: start clean.
                if message.reset || (cursor.is_empty() && !cache.is_empty()) {
                    cache.clear();
                }
                if message.reset {
                    stats.resets.fetch_add(1, Ordering::Relaxed);
                }
                let digests: Vec<KeyDigest> =
                    message.key_digests.iter().filter_map(|d| KeyDigest::try_from(d.as_slice()).ok()).collect();
                cache.invalidate_digests(&digests);
                stats.changes.fetch_add(digests.len() as u64, Ordering::Relaxed);
                cursor = message.cursor;
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        if stats.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!("apikeys key change stream lost: revocations now wait for the cache TTL; reconnecting");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
