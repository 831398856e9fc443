//! Export of the audit trail as a stream (WatchAuditEvents): an organization's events as they are
//! written, oldest first, resumable by cursor, for a SIEM.
//!
//! Events are read by time. A transaction stamps its event before it commits, so an event can
//! become visible after a later-stamped one was sent; every read therefore looks back
//! [`OVERLAP`] before the last event sent and skips the events it already sent. Within one
//! stream, each event is sent once. A resumed stream (from a cursor) looks back the same way
//! without knowing what was sent before, so delivery across a resume is at least once: a consumer
//! deduplicates by event ID.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::Caller,
    error::{Error, Result},
    keys::Keys,
    store::entities::audit_event,
};

/// How far before the last event sent each read looks again.
pub const OVERLAP: Duration = Duration::from_secs(5);

/// Events per message at most.
const BATCH: u64 = 500;

/// How often the trail is read while nothing new arrives.
const POLL: Duration = Duration::from_millis(500);

/// How often the caller's key is checked again (still live, still an admin).
const RECHECK: Duration = Duration::from_secs(5);

/// How often an empty message (with the cursor) is sent on a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Where a stream stands: the time and ID of the last event sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    /// When the last event sent was written.
    pub time: DateTime<Utc>,
    /// Its ID.
    pub id: Uuid,
}

impl AuditCursor {
    /// The opaque text of this cursor.
    pub fn encode(&self) -> String {
        let text = format!("{}|{}", self.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// A cursor from its text.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming `field`.
    pub fn decode(text: &str, field: &str) -> Result<Self> {
        let bad = || Error::invalid(field, "is not a cursor from WatchAuditEvents");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (time, id) = text.split_once('|').ok_or_else(bad)?;
        let time = DateTime::parse_from_rfc3339(time).map_err(|_| bad())?.with_timezone(&Utc);
        Ok(Self { time, id: id.parse().map_err(|_| bad())? })
    }
}

/// One message of the stream: the events (possibly none, for the first message and heartbeats)
/// and the cursor to resume after them.
#[derive(Debug)]
pub struct AuditBatch {
    /// New events, oldest first.
    pub events: Vec<audit_event::Model>,
    /// The position after them.
    pub cursor: AuditCursor,
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the events written at or after this time.
    At(DateTime<Utc>),
    /// After the event a previous stream's cursor names (looking back [`OVERLAP`], so events
    /// may come again: at least once).
    After(AuditCursor),
}

/// A stream's state; see the module docs.
#[derive(Debug)]
pub struct AuditTail {
    keys: Arc<Keys>,
    caller: Caller,
    cursor: AuditCursor,
    /// Nothing written before this time is sent.
    floor: Option<DateTime<Utc>>,
    /// Events sent within [`OVERLAP`] of the cursor, by ID.
    sent: HashMap<Uuid, DateTime<Utc>>,
    started: bool,
    closing: tokio::sync::watch::Receiver<bool>,
    /// When the caller's key was last checked.
    checked: tokio::time::Instant,
}

impl AuditTail {
    /// A tail of the caller's org's trail from `start`, ending when `closing` turns true.
    pub fn new(keys: Arc<Keys>, caller: Caller, start: Start, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        let (cursor, floor) = match start {
            Start::At(time) => (AuditCursor { time, id: Uuid::nil() }, Some(time)),
            Start::After(cursor) => (cursor, None),
        };
        let checked = tokio::time::Instant::now();
        Self { keys, caller, cursor, floor, sent: HashMap::new(), started: false, closing, checked }
    }

    /// The next message: at once the first time, then when events arrive, or a heartbeat.
    /// `None` when the server shuts down.
    ///
    /// # Errors
    /// UNAVAILABLE when the trail cannot be read (the client resumes from its last cursor).
    pub async fn next(&mut self) -> Option<Result<AuditBatch>> {
        if !self.started {
            self.started = true;
            return Some(Ok(AuditBatch { events: Vec::new(), cursor: self.cursor }));
        }
        let quiet_since = tokio::time::Instant::now();
        loop {
            if *self.closing.borrow() {
                return None;
            }
            // The stream lasts only as long as the caller may read the trail: its key deleted,
            // disabled, expired, locked or stripped of the admin permission ends it.
            if self.checked.elapsed() >= RECHECK {
                if let Err(error) = self.keys.check_still_admin(&self.caller).await {
                    return Some(Err(error));
                }
                self.checked = tokio::time::Instant::now();
            }
            let events = match self.read().await {
                Ok(events) => events,
                Err(error) => return Some(Err(error)),
            };
            if !events.is_empty() || quiet_since.elapsed() >= HEARTBEAT {
                return Some(Ok(AuditBatch { events, cursor: self.cursor }));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
        }
    }

    /// The events not sent yet, oldest first; moves the cursor past them.
    async fn read(&mut self) -> Result<Vec<audit_event::Model>> {
        let overlap = chrono::Duration::from_std(OVERLAP).map_err(Error::internal)?;
        let mut since = (self.cursor.time.checked_sub_signed(overlap).unwrap_or(DateTime::<Utc>::MIN_UTC), Uuid::nil());
        loop {
            let rows = self.keys.audit_events_since(&self.caller, since, BATCH).await?;
            let full = rows.len() as u64 == BATCH;
            let last = rows.last().map(|row| (row.time, row.id));
            let (cursor, floor) = (self.cursor, self.floor);
            let new: Vec<_> = rows
                .into_iter()
                .filter(|row| {
                    !self.sent.contains_key(&row.id)
                        && (row.time, row.id) != (cursor.time, cursor.id)
                        && floor.is_none_or(|floor| row.time >= floor)
                })
                .collect();
            match (new.last(), last) {
                (Some(last), _) => {
                    self.cursor = AuditCursor { time: last.time, id: last.id };
                    for row in &new {
                        self.sent.insert(row.id, row.time);
                    }
                    let horizon = self.cursor.time.checked_sub_signed(overlap).unwrap_or(DateTime::<Utc>::MIN_UTC);
                    self.sent.retain(|_, time| *time >= horizon);
                    return Ok(new);
                }
                // A full page of events already sent (a burst within the overlap): read on after
                // its last one, by (time, ID), so a burst of one timestamp cannot stall the stream.
                (None, Some(position)) if full => since = position,
                _ => return Ok(Vec::new()),
            }
        }
    }
}
