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

async fn admin_at(url: &str, token: &str) -> Client {
    let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    Client { inner: ApiKeyServiceClient::new(channel), authorization: format!("Bearer {token}") }
}

fn version(key: &pb::ApiKey) -> u64 {
    key.etag.trim_matches('"').parse().unwrap()
}

#[tokio::test]
async fn audit_events_survive_a_kill_exactly_when_their_change_does() {
    let db = TestDb::new().await;
    let mut server = Binary::serve(&db, &[]).await;
    let token = std::fs::read_to_string(db.dir.path().join("data/bootstrap-token")).unwrap().trim().to_owned();
    let admin = admin_at(&server.url(), &token).await;
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
                    let admin = admin_at(&url, &token).await;
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
        let admin = admin_at(&server.url(), &token).await;
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
