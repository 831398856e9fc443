//! Revocation across replicas and to consumers.
//!
//! Every change of a key is appended to the change log in the transaction that makes it
//! ([`Store::mutate`](crate::store::Store::mutate)); on PostgreSQL the same transaction announces the
//! key on [`CHANGE_CHANNEL`] (delivered at commit, so a rolled-back change announces nothing).
//! [`ChangeFeed`] follows the log: it reads what is new whenever it is woken (a notification, a change
//! made by this replica) and at least every `change_poll_ms`, drops the changed keys' entries from
//! this replica's verification cache, and hands each batch to the `WatchKeyChanges` streams.
//!
//! On PostgreSQL a dedicated connection (not from the pool, so not through a transaction pooler)
//! LISTENs. Its notifications drop the key's cache entries at once, before the log is even read.
//! The connection is pinged every [`LISTENER_PING`], so one that died silently is noticed. Whenever
//! it is re-established the whole cache is dropped, since notifications may have been missed; while
//! it is down, or while the log cannot be read, cached verifications are trusted for at most
//! `degraded_cache_ttl_ms`.
//!
//! A watcher that resumes from a cursor gets what it missed in messages of at most [`BATCH`]
//! changes; if it missed more than [`MAX_REPLAY`], or its cursor is no longer in the log, it is told
//! to reset instead.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::{
    auth::{
        cache::{KeyDigest, VerifiedCache, key_digest},
        watch::AbortOnDrop,
    },
    error::{Error, Result},
    quota::{Quota, Slot},
    store::{CHANGE_CHANNEL, KeyChange, Store, breaker::CHECK_TIMEOUT},
};

/// The `application_name` of the listening connection (operators find it in `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "apikeys-change-listener";

/// Changes read from the log per query, and per WatchKeyChanges message.
pub const BATCH: u64 = 1000;

/// Most changes replayed to a resuming watcher; beyond that it is told to reset.
pub const MAX_REPLAY: u64 = 10 * BATCH;

/// How often the listener connection is pinged.
pub const LISTENER_PING: Duration = Duration::from_secs(5);

/// Settings of a [`ChangeFeed`].
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Longest time between two reads of the log, notifications or not.
    pub poll: Duration,
    /// How long cached verifications are trusted while the listener is down.
    pub degraded_cache_ttl: Duration,
    /// How long cached verifications are trusted while the database cannot be reached.
    pub outage_cache_ttl: Duration,
    /// How long changes stay in the log for reconnecting watchers.
    pub retention: Duration,
    /// Most `WatchKeyChanges` streams at once.
    pub max_watchers: usize,
    /// Most `WatchKeyChanges` streams of one client address at once.
    pub max_watchers_per_peer: usize,
    /// Interval of the empty messages that tell a watcher its stream is alive.
    pub heartbeat: Duration,
}

/// A position in the change log as a watcher holds it: the log's instance and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The log's instance (one per database).
    pub instance: Uuid,
    /// The last change seen.
    pub seq: i64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.instance.simple(), self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::invalid("cursor", "not a cursor returned by WatchKeyChanges");
        let (instance, seq) = text.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            instance: Uuid::try_parse(instance).map_err(|_| bad())?,
            seq: seq.parse().ok().filter(|seq| *seq >= 0).ok_or_else(bad)?,
        })
    }
}

/// One change as it travels to watchers: its position and its key's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Position in the log.
    pub seq: i64,
    /// [`key_digest`] of the key.
    pub digest: KeyDigest,
}

impl From<&KeyChange> for Change {
    fn from(change: &KeyChange) -> Self {
        Self { seq: change.seq, digest: key_digest(change.key_id.0) }
    }
}

/// What a watcher receives: the changes after its cursor, or the news that it must start over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The position after this update.
    pub cursor: Cursor,
    /// The keys that changed, in log order.
    pub changes: Vec<Change>,
    /// Changes may have been missed: drop everything cached.
    pub reset: bool,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Changes read from the log.
    pub changes: AtomicU64,
    /// Times the listener connection was (re)established.
    pub listener_connects: AtomicU64,
    /// Whether the listener is connected (always true without PostgreSQL: nothing to listen to).
    pub listener_up: AtomicBool,
    /// Open `WatchKeyChanges` streams.
    pub watchers: AtomicUsize,
    /// Whether the last read of the log succeeded.
    pub log_readable: AtomicBool,
    /// Whether the log was read since the listener was last lost (so the database answers and
    /// only the news is slower).
    pub read_since_listener_lost: AtomicBool,
}

/// Follows the change log; see the module docs.
#[derive(Debug)]
pub struct ChangeFeed {
    store: Store,
    cache: Arc<VerifiedCache>,
    config: FeedConfig,
    wake: Arc<Notify>,
    position: Mutex<Cursor>,
    sender: broadcast::Sender<Arc<Vec<Change>>>,
    closing: tokio::sync::watch::Sender<bool>,
    stats: FeedStats,
    peers: Arc<Quota<std::net::IpAddr>>,
    postgres: bool,
    reconnect_pause_ms: AtomicU64,
    /// Notified when the database is found back: the listener reconnects at once instead of
    /// after its backoff.
    database_back: Notify,
}

impl ChangeFeed {
    /// A feed over `store` that starts at the end of the log (everything before is already
    /// reflected in the empty cache), reading the log whenever `wake` is notified (this replica
    /// committed a change).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL (startup).
    pub async fn start(
        store: Store,
        cache: Arc<VerifiedCache>,
        wake: Arc<Notify>,
        config: FeedConfig,
    ) -> Result<Arc<Self>> {
        let log = store.change_log().await?;
        let postgres = store.backend() == sea_orm::DatabaseBackend::Postgres;
        if postgres {
            // Until the listener is up, changes made by other replicas may go unnoticed for a poll.
            cache.set_trust_limit(Some(config.degraded_cache_ttl));
        }
        let stats = FeedStats::default();
        stats.listener_up.store(!postgres, Ordering::Relaxed);
        stats.log_readable.store(true, Ordering::Relaxed);
        stats.read_since_listener_lost.store(true, Ordering::Relaxed);
        let feed = Arc::new(Self {
            store,
            cache,
            wake,
            position: Mutex::new(Cursor { instance: log.instance, seq: log.head }),
            sender: broadcast::channel(1024).0,
            closing: tokio::sync::watch::Sender::new(false),
            stats,
            peers: Quota::new(config.max_watchers_per_peer),
            postgres,
            reconnect_pause_ms: AtomicU64::new(0),
            database_back: Notify::new(),
            config,
        });
        // Weak: the store outlives no feed because of this.
        let weak = Arc::downgrade(&feed);
        feed.store.watch_reachability(move || {
            if let Some(feed) = weak.upgrade() {
                feed.update_trust();
                if feed.store.reachable() {
                    feed.database_back.notify_one();
                }
            }
        });
        Ok(feed)
    }

    /// The counters.
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// Ends every watcher's stream (the server is shutting down; consumers reconnect elsewhere).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when the server starts shutting down: long-lived streams end then.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    /// How long cached verifications are trusted, from what is known of the news of changes:
    /// - the listener is up (or there is none, on SQLite) and the log can be read: their TTL;
    /// - the listener is down but the log was read since: `degraded_cache_ttl` (the log is read
    ///   every `poll`; other replicas' changes are noticed then);
    /// - the database cannot be reached at all: `outage_cache_ttl`. Nobody can change a key while
    ///   the database is down; if only this replica is cut off, changes made through others go
    ///   unnoticed here that long (the operator's choice). Applied the moment the store finds it
    ///   down or back ([`Store::watch_reachability`]);
    /// - the log cannot be read though the database answers: `degraded_cache_ttl`.
    ///
    /// Right after the listener is lost, until the log is read again (at once), the TTL holds.
    fn update_trust(&self) {
        let stats = &self.stats;
        let limit = if !self.postgres {
            None
        } else if !self.store.reachable() {
            Some(self.config.outage_cache_ttl)
        } else if !stats.log_readable.load(Ordering::Relaxed)
            || (!stats.listener_up.load(Ordering::Relaxed) && stats.read_since_listener_lost.load(Ordering::Relaxed))
        {
            Some(self.config.degraded_cache_ttl)
        } else {
            None
        };
        self.cache.set_trust_limit(limit);
    }

    fn position(&self) -> Cursor {
        *self.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows the log until the task is dropped; on PostgreSQL also runs the listener.
    pub async fn run(self: Arc<Self>, database_url: String) {
        let _listener = self.postgres.then(|| AbortOnDrop(tokio::spawn(self.clone().listen(database_url))));
        let mut last_prune = tokio::time::Instant::now();
        loop {
            // Bounded: a read that hangs (a half-open connection) must not keep the cache
            // trusted for its whole TTL after the listener is lost.
            let read = tokio::time::timeout(self.config.poll.max(CHECK_TIMEOUT), self.catch_up()).await;
            let readable = match read.unwrap_or(Err(Error::Unavailable("database"))) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "could not read the change log; will retry");
                    // Is the database gone, or only this read? The answer decides the trust in
                    // the cache (see update_trust), so find out before saying the log is unreadable.
                    self.store.check().await;
                    false
                }
            };
            self.stats.log_readable.store(readable, Ordering::Relaxed);
            if readable {
                self.stats.read_since_listener_lost.store(true, Ordering::Relaxed);
            }
            // Also when nothing changed here: the database's reachability may have.
            self.update_trust();
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                let horizon = chrono::Duration::from_std(self.config.retention)
                    .ok()
                    .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention));
                if let Some(horizon) = horizon
                    && let Err(error) = self.store.prune_changes(horizon).await
                {
                    tracing::warn!(%error, "could not prune the change log");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Reads what is new in the log, drops those keys' cache entries and tells the watchers.
    async fn catch_up(&self) -> Result<()> {
        loop {
            let after = self.position().seq;
            let read = self.store.changes_after(after, BATCH).await?;
            let Some(last) = read.last().map(|c| c.seq) else { return Ok(()) };
            let changes: Vec<Change> = read.iter().map(Change::from).collect();
            let digests: Vec<KeyDigest> = changes.iter().map(|c| c.digest).collect();
            self.cache.invalidate_digests(&digests);
            self.stats.changes.fetch_add(changes.len() as u64, Ordering::Relaxed);
            self.position.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seq = last;
            // No receivers is fine: nobody watches.
            let _ = self.sender.send(Arc::new(changes));
        }
    }

    /// Keeps a LISTEN connection to PostgreSQL, reconnecting with backoff.
    async fn listen(self: Arc<Self>, database_url: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connects = self.stats.listener_connects.load(Ordering::Relaxed);
            match self.listen_once(&database_url).await {
                Ok(()) => tracing::warn!("change listener lost its connection; reconnecting"),
                Err(error) => tracing::warn!(%error, "change listener failed; reconnecting"),
            }
            self.stats.listener_up.store(false, Ordering::Relaxed);
            self.stats.read_since_listener_lost.store(false, Ordering::Relaxed);
            // Read the log now, and find out whether the database itself is gone (then calls fail
            // fast instead of waiting for a connection).
            self.wake();
            self.store.check().await;
            self.update_trust();
            // A connection that came up and was lost later starts the backoff over.
            if self.stats.listener_connects.load(Ordering::Relaxed) > connects {
                backoff = Duration::from_millis(100);
            }
            let pause = Duration::from_millis(self.reconnect_pause_ms.load(Ordering::Relaxed));
            // The database coming back ends the wait: until the listener is up, the cache is
            // trusted for less (see update_trust).
            tokio::select! {
                () = tokio::time::sleep(backoff + pause) => {}
                () = self.database_back.notified(), if pause.is_zero() => backoff = Duration::from_millis(100),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Makes the listener wait `pause` longer before it reconnects. Only for tests that change keys
    /// while it is down; never set in production.
    #[doc(hidden)]
    pub fn pause_listener_reconnect_for_tests(&self, pause: Duration) {
        let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.reconnect_pause_ms.store(millis, Ordering::Relaxed);
    }

    /// One life of the listener connection: connect, LISTEN, flush the cache, then follow
    /// notifications until the connection is lost (`Ok`) or fails (`Err`).
    async fn listen_once(&self, database_url: &str) -> Result<(), sea_orm::sqlx::Error> {
        use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
        let options: PgConnectOptions = database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.application_name(LISTENER_APPLICATION_NAME))
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection ends this life (the caller reconnects, and flushes then), rather than
        // being re-established behind our back.
        listener.eager_reconnect(false);
        listener.listen(CHANGE_CHANNEL).await?;
        // Notifications may have been missed while the connection was down: drop everything cached
        // (and read the log, which names what changed). Before the first connection nothing is
        // dropped: the feed read the log at startup, and reading it again covers the time since.
        if self.stats.listener_connects.fetch_add(1, Ordering::Relaxed) > 0 {
            self.cache.clear();
        }
        self.stats.listener_up.store(true, Ordering::Relaxed);
        self.update_trust();
        self.wake();
        tracing::info!("change listener connected");
        let mut ping = tokio::time::interval(LISTENER_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received? {
                    Some(notification) => {
                        if let Ok(key_id) = Uuid::try_parse(notification.payload()) {
                            self.cache.invalidate(key_id);
                        }
                        self.wake();
                    }
                    None => return Ok(()),
                },
                _ = ping.tick() => {
                    // A connection that died without a word (a partition, a dropped NAT entry)
                    // fails this, instead of leaving the listener waiting forever.
                    let query = sea_orm::sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(LISTENER_PING, query).await {
                        Ok(result) => {
                            result?;
                        }
                        Err(_) => return Err(sea_orm::sqlx::Error::PoolTimedOut),
                    }
                }
            }
        }
    }

    /// A watcher's stream of updates after `cursor` (`None`: from now on), as WatchKeyChanges sends
    /// them; the first update comes at once. `peer` is the client's address, if known.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED (`TOO_MANY_WATCHERS`), UNAVAILABLE or INTERNAL.
    pub async fn watch(self: &Arc<Self>, cursor: Option<Cursor>, peer: Option<std::net::IpAddr>) -> Result<Watch> {
        let peer_slot = match peer {
            Some(ip) => Some(self.peers.take(ip).ok_or(Error::TooManyWatchers)?),
            None => None,
        };
        let slot = WatcherSlot::take(self.clone()).ok_or(Error::TooManyWatchers)?;
        // Subscribe before reading the log, so nothing committed in between is lost; what is read
        // twice is skipped by position.
        let receiver = self.sender.subscribe();
        let log = self.store.change_log().await?;
        let head = Cursor { instance: log.instance, seq: log.head };
        let reset = Update { cursor: head, changes: Vec::new(), reset: true };
        let pending = match cursor {
            None => vec![Update { cursor: head, changes: Vec::new(), reset: false }],
            Some(c) if c.instance != log.instance || c.seq < log.pruned_through || c.seq > log.head => vec![reset],
            Some(c) => match self.replay(c).await? {
                Some(updates) => updates,
                None => vec![reset],
            },
        };
        let position = pending.last().map_or(head, |u| u.cursor);
        let closing = self.closing.subscribe();
        Ok(Watch {
            feed: self.clone(),
            receiver,
            closing,
            position,
            pending: pending.into(),
            _slot: slot,
            _peer_slot: peer_slot,
        })
    }

    /// The changes after `cursor` in updates of at most [`BATCH`], or `None` if there are more than
    /// [`MAX_REPLAY`] or the log was pruned past `cursor` meanwhile.
    async fn replay(&self, cursor: Cursor) -> Result<Option<Vec<Update>>> {
        let mut updates = Vec::new();
        let mut seq = cursor.seq;
        let mut replayed = 0;
        loop {
            let batch = self.store.changes_after(seq, BATCH).await?;
            let Some(last) = batch.last() else { break };
            replayed += batch.len() as u64;
            if replayed > MAX_REPLAY {
                return Ok(None);
            }
            seq = last.seq;
            let changes = batch.iter().map(Change::from).collect();
            updates.push(Update { cursor: Cursor { seq, ..cursor }, changes, reset: false });
        }
        // A prune between the first read and these may have taken changes this replay never saw.
        if self.store.change_log().await?.pruned_through > cursor.seq {
            return Ok(None);
        }
        if updates.is_empty() {
            updates.push(Update { cursor, changes: Vec::new(), reset: false });
        }
        Ok(Some(updates))
    }
}

/// One watcher's updates; see [`ChangeFeed::watch`].
#[derive(Debug)]
pub struct Watch {
    feed: Arc<ChangeFeed>,
    receiver: broadcast::Receiver<Arc<Vec<Change>>>,
    closing: tokio::sync::watch::Receiver<bool>,
    position: Cursor,
    pending: std::collections::VecDeque<Update>,
    _slot: WatcherSlot,
    _peer_slot: Option<Slot<std::net::IpAddr>>,
}

impl Watch {
    /// The next update: changes, an empty heartbeat after the heartbeat interval, or a reset if this
    /// watcher fell too far behind the feed; `None` once the server is shutting down, or when the
    /// feed cannot read the log (a heartbeat would claim news that is not arriving).
    pub async fn next(&mut self) -> Option<Update> {
        if let Some(update) = self.pending.pop_front() {
            return Some(update);
        }
        let heartbeat = tokio::time::sleep(self.feed.config.heartbeat);
        tokio::pin!(heartbeat);
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                () = &mut heartbeat => {
                    let healthy = self.feed.stats.log_readable.load(Ordering::Relaxed);
                    return healthy.then_some(Update { cursor: self.position, changes: Vec::new(), reset: false });
                }
                _ = self.closing.wait_for(|closing| *closing) => return None,
            };
            match received {
                Ok(batch) => {
                    let changes: Vec<Change> = batch.iter().filter(|c| c.seq > self.position.seq).copied().collect();
                    if let Some(last) = changes.last() {
                        self.position.seq = last.seq;
                        return Some(Update { cursor: self.position, changes, reset: false });
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                    // Never backwards: this watcher's first read may have been ahead of the feed.
                    self.position.seq = self.position.seq.max(self.feed.position().seq);
                    return Some(Update { cursor: self.position, changes: Vec::new(), reset: true });
                }
            }
        }
    }
}

/// A counted place among the watchers, given back on drop.
#[derive(Debug)]
struct WatcherSlot(Arc<ChangeFeed>);

impl WatcherSlot {
    fn take(feed: Arc<ChangeFeed>) -> Option<Self> {
        let max = feed.config.max_watchers;
        feed.stats
            .watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(feed))
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.stats.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_malformed_ones_name_the_field() {
        let cursor = Cursor { instance: Uuid::new_v4(), seq: 42 };
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        for bad in ["", "42", "x.1", &format!("{}.-1", Uuid::new_v4().simple()), &format!("{}.", Uuid::nil())] {
            let error = bad.parse::<Cursor>().unwrap_err();
            assert!(matches!(&error, Error::InvalidArgument(v) if v[0].field == "cursor"), "{bad:?}: {error:?}");
        }
    }
}
