//! Audit events survive a crash exactly when their mutation does (issue 12): the real binary is
//! SIGKILLed while clients change keys; after each restart every key's version equals the number of
//! its audit events (each change writes one, in its own transaction), every acknowledged change is
//! there, and at most the calls in flight at the kill are there without having been acknowledged.
//! On SQLite (WAL, `synchronous = NORMAL`: a killed process loses nothing committed; only an
//! operating-system crash could lose the last transactions) and on PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use apikeys::pb::{self, api_key_service_client::ApiKeyServiceClient};
use tonic::transport::Channel;

use crate::harness::*;

const KEYS: usize = 4;
const KILLS: usize = 3;

fn version(key: &pb::ApiKey) -> u64 {
    key.etag.trim_matches('"').parse().unwrap()
}

#[tokio::test]
async fn audit_events_survive_a_kill_exactly_when_their_change_does() {
    let db = TestDb::new().await;
    let mut server = Binary::serve(&db, &[]).await;
    let token = std::fs::read_to_string(db.dir.path().join("data/bootstrap-token")).unwrap().trim().to_owned();
    let admin = Client::bearer(&server.url(), &token).await;
    let mut ids = Vec::new();
    for i in 0..KEYS {
        ids.push(admin.create(&format!("Crash {i}"), &["read_data"]).await.unwrap().api_key.unwrap().id);
    }
    // Changes each worker saw acknowledged, per key.
    let acknowledged: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());

    let mut landed = 0;
    for kill in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..KEYS)
            .map(|k| {
                let (url, token, id) = (server.url(), token.clone(), ids[k].clone());
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let admin = Client::bearer(&url, &token).await;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let result = match n % 3 {
                            0 => admin.regenerate(&id, "", false).await.map(drop),
                            1 => {
                                let update = pb::UpdateApiKeyRequest {
                                    api_key: Some(pb::ApiKey {
                                        id: id.clone(),
                                        description: format!("kill {kill} change {n}"),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                };
                                admin.update(update).await.map(drop)
                            }
                            _ => {
                                let disable = pb::DisableApiKeyRequest { id: id.clone(), ..Default::default() };
                                let enable = pb::EnableApiKeyRequest { id: id.clone(), etag: String::new() };
                                let request = admin.req(disable);
                                match admin.inner.clone().disable_api_key(request).await {
                                    Ok(_) => {
                                        acknowledged[k].fetch_add(1, Ordering::Relaxed);
                                        admin.inner.clone().enable_api_key(admin.req(enable)).await.map(drop)
                                    }
                                    Err(status) => Err(status),
                                }
                            }
                        };
                        match result {
                            Ok(()) => acknowledged[k].fetch_add(1, Ordering::Relaxed),
                            // The kill: this call's fate is unknown.
                            Err(_) => return,
                        };
                    }
                })
            })
            .collect();
        // Kill somewhere in the middle of the changes (a different moment each time).
        tokio::time::sleep(Duration::from_millis(300 + 170 * kill as u64)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }

        server = Binary::serve(&db, &[]).await;
        let admin = Client::bearer(&server.url(), &token).await;
        let mut total = 0;
        for (k, id) in ids.iter().enumerate() {
            let key = admin.get(id).await.unwrap();
            let filter = pb::ListAuditEventsRequest { key_id: id.clone(), page_size: 1000, ..Default::default() };
            let events =
                admin.inner.clone().list_audit_events(admin.req(filter)).await.unwrap().into_inner().audit_events;
            let changes = version(&key) - 1;
            assert_eq!(version(&key), events.len() as u64, "one audit event per version of {id}: {events:?}");
            let acked = acknowledged[k].load(Ordering::Relaxed);
            // Each worker has at most one call in flight (one unacknowledged change may have landed).
            assert!(changes >= acked && changes <= acked + 1, "key {id}: {changes} changes, {acked} acknowledged");
            // Whatever landed of the in-flight call now counts as acknowledged for the next round.
            acknowledged[k].store(changes, Ordering::Relaxed);
            total += changes;
        }
        assert!(total > landed, "no change landed before kill {kill}");
        landed = total;
    }
    drop(server);
}

/// What a worker knows of one of its keys: the last acknowledged state, and the change that was
/// in flight when the server was killed (its fate unknown).
#[derive(Debug, Clone)]
struct Known {
    id: String,
    token: String,
    version: u64,
    deleted: bool,
    in_flight: Option<&'static str>,
    /// A regeneration landed without its answer: the secret is unknown, the key is retired.
    retired: bool,
}

/// One worker's keys, and the name of a create in flight at the kill.
#[derive(Debug, Default)]
struct Worker {
    keys: Vec<Known>,
    creating: Option<String>,
}

/// Creates, updates, regenerates and deletes its own keys until `stop`, one call at a time; the
/// call the kill interrupts is noted as in flight.
async fn churn(
    url: String,
    token: String,
    w: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    state: Arc<std::sync::Mutex<Worker>>,
) {
    let admin = Client::bearer(&url, &token).await;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let live: Vec<usize> = {
            let state = state.lock().unwrap();
            (0..state.keys.len()).filter(|&i| !state.keys[i].deleted && !state.keys[i].retired).collect()
        };
        let op = if live.len() < 2 { 0 } else { n % 4 };
        if op == 0 {
            let name = format!("W{w} r{round} k{n}");
            state.lock().unwrap().creating = Some(name.clone());
            match admin.create(&name, &["read_data"]).await {
                Ok(created) => {
                    let key = created.api_key.unwrap();
                    let mut state = state.lock().unwrap();
                    state.creating = None;
                    let known = Known {
                        id: key.id.clone(),
                        token: created.token,
                        version: version(&key),
                        deleted: false,
                        in_flight: None,
                        retired: false,
                    };
                    state.keys.push(known);
                }
                Err(_) => return,
            }
            continue;
        }
        let i = live[n % live.len()];
        let (id, op_name) = {
            let mut state = state.lock().unwrap();
            let name = ["", "regenerate", "update", "delete"][op];
            state.keys[i].in_flight = Some(name);
            (state.keys[i].id.clone(), name)
        };
        let result = match op_name {
            "regenerate" => admin.regenerate(&id, "", false).await.map(|r| (r.api_key.unwrap(), Some(r.token))),
            "update" => {
                let patch = pb::ApiKey { id: id.clone(), description: format!("change {n}"), ..Default::default() };
                let request = pb::UpdateApiKeyRequest { api_key: Some(patch), ..Default::default() };
                admin.update(request).await.map(|key| (key, None))
            }
            _ => admin.delete(&id, "", false).await.map(|key| (key, None)),
        };
        match result {
            Ok((key, token)) => {
                let mut state = state.lock().unwrap();
                let known = &mut state.keys[i];
                known.in_flight = None;
                known.version = version(&key);
                known.deleted = op_name == "delete";
                if let Some(token) = token {
                    known.token = token;
                }
            }
            Err(_) => return,
        }
    }
}

async fn authenticates(client: &mut ApiKeyServiceClient<Channel>, token: &str) -> bool {
    authenticate_token(client, token, &[]).await.is_ok()
}

/// Kill -9 under a mixed write load (issue 14): after each restart, every acknowledged change is
/// there with its exact result (the returned secret authenticates, a deleted key is refused), a
/// change in flight at the kill is either wholly there or not at all, every key has one audit
/// event per version, and display names are unique. `APIKEYS_CRASH_KILLS` sets the number of
/// kills (3 here; 20 for the figures in BENCHMARKS.md).
#[tokio::test]
async fn acknowledged_writes_survive_kill_9_with_their_exact_results() {
    let kills: usize = std::env::var("APIKEYS_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(KILLS);
    let db = TestDb::new().await;
    let mut server = Binary::serve(&db, &[]).await;
    let token = std::fs::read_to_string(db.dir.path().join("data/bootstrap-token")).unwrap().trim().to_owned();
    let workers: Vec<Arc<std::sync::Mutex<Worker>>> = (0..KEYS).map(|_| Arc::default()).collect();
    let (mut checked, mut in_flight_seen) = (0usize, 0usize);
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(w, state)| tokio::spawn(churn(server.url(), token.clone(), w, round, stop.clone(), state.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(400 + 97 * (round as u64 % 7))).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }

        server = Binary::serve(&db, &[]).await;
        let admin = Client::bearer(&server.url(), &token).await;
        let mut client = ApiKeyServiceClient::new(Channel::from_shared(server.url()).unwrap().connect().await.unwrap());
        let listing = pb::ListApiKeysRequest { page_size: 1000, show_deleted: true, ..Default::default() };
        let listed = admin.list(listing).await.unwrap();
        assert!(listed.next_page_token.is_empty());
        let mut live_names = std::collections::HashSet::new();
        for key in listed.api_keys.iter().filter(|k| k.state() != pb::api_key::State::Deleted) {
            assert!(live_names.insert(key.display_name.to_lowercase()), "two live keys named {:?}", key.display_name);
        }
        for state in &workers {
            // A copy to check (the lock is not held across the calls), written back after.
            let (mut keys, creating) = {
                let mut state = state.lock().unwrap();
                (state.keys.clone(), state.creating.take())
            };
            if let Some(name) = creating {
                // A create in flight: there wholly (one version, one event) or not at all.
                if let Some(key) = listed.api_keys.iter().find(|k| k.display_name == name) {
                    assert_eq!(
                        (version(key), key.permissions.as_slice()),
                        (1, &["read_data".to_owned()][..]),
                        "{key:?}"
                    );
                    in_flight_seen += 1;
                    keys.push(Known {
                        id: key.id.clone(),
                        token: String::new(),
                        version: 1,
                        deleted: false,
                        in_flight: None,
                        retired: true,
                    });
                }
            }
            for known in &mut keys {
                let key = admin
                    .get(&known.id)
                    .await
                    .unwrap_or_else(|s| panic!("acknowledged key {} is gone: {s:?}", known.id));
                let now = version(&key);
                let deleted = key.state() == pb::api_key::State::Deleted;
                // Never without its permissions (written in the create's transaction).
                assert_eq!(key.permissions, ["read_data"], "{key:?}");
                match known.in_flight.take() {
                    None => {
                        assert_eq!((now, deleted), (known.version, known.deleted), "{known:?} is now {key:?}");
                    }
                    Some(op) => {
                        assert!(
                            now == known.version || now == known.version + 1,
                            "{op} in flight: {known:?} is now {key:?}"
                        );
                        if now > known.version {
                            in_flight_seen += 1;
                            known.version = now;
                            match op {
                                "delete" => assert!(deleted, "{key:?}"),
                                // The new secret was never seen: the key is set aside.
                                "regenerate" => known.retired = true,
                                _ => {}
                            }
                        }
                        known.deleted = deleted;
                    }
                }
                if !known.retired {
                    assert_eq!(
                        authenticates(&mut client, &known.token).await,
                        !known.deleted,
                        "the last acknowledged secret of {known:?}"
                    );
                }
                let filter =
                    pb::ListAuditEventsRequest { key_id: known.id.clone(), page_size: 1000, ..Default::default() };
                let events =
                    admin.inner.clone().list_audit_events(admin.req(filter)).await.unwrap().into_inner().audit_events;
                assert_eq!(events.len() as u64, now, "one audit event per version of {}", known.id);
                checked += 1;
            }
            // What the check learned becomes the worker's knowledge for the next round.
            state.lock().unwrap().keys = keys;
        }
    }
    assert!(checked > kills * KEYS, "{checked} key checks");
    eprintln!(
        "{kills} kills survived: {checked} key states checked after restarts, {in_flight_seen} in-flight changes found landed"
    );
    drop(server);
}
