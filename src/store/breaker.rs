//! Failing fast while the database is down. Without this, every request that needs the database
//! waits for the pool's acquire timeout (sqlx retries connecting until then) before UNAVAILABLE,
//! so callers with shorter deadlines see DEADLINE_EXCEEDED and pile up meanwhile.
//!
//! The first call that finds the database unreachable opens the breaker; while it is open, calls
//! are refused at once (UNAVAILABLE), except one probe every [`PROBE_INTERVAL`] that is let
//! through; the first call that reaches the database again, probe or health check, closes it.
//! Every call is also capped at what is left of the caller's deadline ([`crate::deadline`]).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    TransactionTrait as _, error::ConnAcquireErr, sqlx,
};

/// [`PROBE_INTERVAL`] in milliseconds, as the breaker keeps time.
const PROBE_INTERVAL_MS: u64 = 250;
/// How often a call is let through to find out whether the database is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(PROBE_INTERVAL_MS);
/// How long a health check gives the database to answer before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long such a probe may wait for the database (a new connection included) before it
/// counts as still down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Told when the database is found down or back.
type Watcher = Box<dyn Fn() + Send + Sync>;

/// The database's reachability as calls find it; see the module docs.
pub struct Breaker {
    open: AtomicBool,
    /// A call ran out of time waiting for the database, or failed in a way that proves nothing:
    /// the health check should look now rather than at its next interval.
    suspect: AtomicBool,
    next_probe_ms: AtomicU64,
    epoch: Instant,
    watchers: std::sync::Mutex<Vec<Watcher>>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("open", &self.open).finish_non_exhaustive()
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            open: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            watchers: std::sync::Mutex::default(),
        }
    }
}

/// Whether `error` proves the database answered: a statement it refused, or a failure after its
/// answer. Other driver errors (a broken protocol exchange, a decode failure) prove nothing.
fn reached(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => false,
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => {
            matches!(&**e, sqlx::Error::Database(_))
        }
        _ => true,
    }
}

/// What [`Breaker::admit`] lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead: the database is believed reachable.
    Closed,
    /// Go ahead, briefly ([`PROBE_TIMEOUT`]): find out whether the database is back.
    Probe,
    /// Fail at once: the database is down.
    Refused,
}

/// Whether `error` means the database could not be reached (as opposed to a failed statement).
pub fn unreachable(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => matches!(
            &**e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ),
        _ => false,
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the database is believed reachable.
    pub fn is_closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// Whether a call found the database slow or strange since the last answer: worth a check.
    pub fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    /// Whether a call may go to the database now: always while closed; while open, one call per
    /// [`PROBE_INTERVAL`], as a probe.
    pub fn admit(&self) -> Admission {
        if self.is_closed() {
            return Admission::Closed;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        let probe = now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, now + PROBE_INTERVAL_MS, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if probe { Admission::Probe } else { Admission::Refused }
    }

    /// Calls `watcher` whenever the database is found down or back (it must not block).
    pub fn watch(&self, watcher: impl Fn() + Send + Sync + 'static) {
        self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Box::new(watcher));
    }

    fn changed(&self) {
        for watcher in self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            watcher();
        }
    }

    /// Notes how a call went: an answer from the database (even a refused statement) closes the
    /// breaker, not reaching it opens it, anything else changes nothing.
    pub fn record<T>(&self, result: &Result<T, DbErr>) {
        match result {
            Err(error) if unreachable(error) => {
                self.next_probe_ms.store(self.now_ms() + PROBE_INTERVAL_MS, Ordering::Release);
                if !self.open.swap(true, Ordering::AcqRel) {
                    tracing::warn!(%error, "database unreachable: failing fast until it answers again");
                    self.changed();
                }
            }
            Err(error) if !reached(error) => self.suspect.store(true, Ordering::Release),
            _ => {
                self.suspect.store(false, Ordering::Release);
                if self.open.swap(false, Ordering::AcqRel) {
                    tracing::warn!("database reachable again");
                    self.changed();
                }
            }
        }
    }

    /// Opens the breaker: the database did not answer in time.
    pub fn trip(&self) {
        self.record::<()>(&Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
    }

    /// Runs `call` if admitted, capped at the caller's deadline, and records the outcome.
    async fn guard<T>(&self, call: impl Future<Output = Result<T, DbErr>>) -> Result<T, DbErr> {
        let admission = self.admit();
        if admission == Admission::Refused {
            return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
        }
        let deadline = crate::deadline::remaining().map(crate::deadline::budget);
        // A probe that has its full time and gets no answer says the database is still down; one
        // cut short by its caller's deadline says nothing (else any client sending a tiny
        // grpc-timeout could hold the breaker open).
        let full_probe = admission == Admission::Probe && deadline.is_none_or(|d| d >= PROBE_TIMEOUT);
        let limit = match admission {
            Admission::Probe => Some(deadline.map_or(PROBE_TIMEOUT, |d| d.min(PROBE_TIMEOUT))),
            _ => deadline,
        };
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => {
                    if full_probe {
                        self.trip();
                    } else {
                        if admission == Admission::Probe {
                            // Let the next call probe at once.
                            self.next_probe_ms.store(0, Ordering::Release);
                        }
                        // Worth a health check.
                        self.suspect.store(true, Ordering::Release);
                    }
                    return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
                }
            },
            None => call.await,
        };
        self.record(&result);
        result
    }
}

/// The pool, behind the breaker: what every store method runs its statements on.
#[derive(Debug, Clone, Copy)]
pub struct Guarded<'a> {
    pub(super) db: &'a DatabaseConnection,
    pub(super) breaker: &'a Breaker,
}

impl Guarded<'_> {
    /// Starts a transaction (acquiring a connection is where an outage shows).
    ///
    /// # Errors
    /// What acquiring a connection returns, or a refusal while the breaker is open.
    pub async fn begin(self) -> Result<DatabaseTransaction, DbErr> {
        self.breaker.guard(self.db.begin()).await
    }

    /// Pings the database.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn ping(self) -> Result<(), DbErr> {
        self.breaker.guard(self.db.ping()).await
    }
}

#[tonic::async_trait]
impl ConnectionTrait for Guarded<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.breaker.guard(self.db.execute_raw(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.breaker.guard(self.db.execute_unprepared(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.breaker.guard(self.db.query_one_raw(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.breaker.guard(self.db.query_all_raw(stmt)).await
    }

    fn support_returning(&self) -> bool {
        self.db.support_returning()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_breaker_lets_one_probe_through_per_interval_and_closes_on_success() {
        let breaker = Breaker::default();
        assert_eq!(breaker.admit(), Admission::Closed);
        breaker.trip();
        assert!(!breaker.is_closed());
        assert_eq!(breaker.admit(), Admission::Refused, "refused at once while open");
        std::thread::sleep(PROBE_INTERVAL + Duration::from_millis(20));
        assert_eq!(breaker.admit(), Admission::Probe, "a probe after the interval");
        assert_eq!(breaker.admit(), Admission::Refused, "only one");
        breaker.record::<()>(&Err(DbErr::Custom("a failed statement".into())));
        assert!(breaker.is_closed(), "a statement that failed reached the database");
        assert_eq!(breaker.admit(), Admission::Closed);
    }

    #[tokio::test]
    async fn a_probe_cut_short_by_its_caller_does_not_hold_the_breaker_open() {
        let breaker = Breaker::default();
        breaker.trip();
        tokio::time::sleep(PROBE_INTERVAL + Duration::from_millis(20)).await;
        // A caller with a millisecond left wins the probe slot and runs out of time.
        let deadline = Some(Instant::now() + Duration::from_millis(1));
        let hung = breaker.guard(std::future::pending::<Result<(), DbErr>>());
        assert!(crate::deadline::within(deadline, hung).await.is_err());
        assert_eq!(breaker.admit(), Admission::Probe, "the next call probes at once");
        breaker.record::<()>(&Ok(()));
        assert!(breaker.is_closed());
    }
}
