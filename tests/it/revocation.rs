//! Revocation across replicas and to consumers: two apikeys processes on one database and a
//! consumer behind the second one; the change stream's contract (cursor, resume, reset, limits); the
//! PostgreSQL listener losing its connection.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use apikeys::{
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    revocation::LISTENER_APPLICATION_NAME,
};
use sea_orm::ConnectionTrait as _;
use sha2::Digest as _;
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::{
    harness::*,
    incidents::{ALL, Consumer, bearer, titled},
};

/// How soon a revocation must be seen everywhere.
const BOUND: Duration = Duration::from_secs(1);

/// Polls `check` until it returns true; panics naming `what` if that takes longer than [`BOUND`].
/// Returns how long it took.
async fn within_bound<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < BOUND, "{what}: still not seen after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The digest the change stream names a key by, computed here from its definition.
fn digest(key_id: &str) -> Vec<u8> {
    let id = uuid::Uuid::parse_str(key_id).unwrap();
    sha2::Sha256::new().chain_update(b"apikeys.v1.key-change\0").chain_update(id.as_bytes()).finalize().to_vec()
}

async fn refused(client: &ApiKeyServiceClient<Channel>, token: &str, required: &[&str], code: Code) -> bool {
    matches!(authenticate_token(&mut client.clone(), token, required).await, Err(s) if s.code() == code)
}

/// On PostgreSQL the replicas read the log only once a minute, so only LISTEN/NOTIFY can deliver a
/// change in time; SQLite has no notifications and reads the log every 100 ms.
fn poll_flag(db: &TestDb) -> &'static str {
    if db.pg.is_some() { "60000" } else { "100" }
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_refused_by_the_other_and_by_the_consumer_within_a_second() {
    let db = TestDb::new().await;
    // Nothing but the change log may end a cached verification early: long TTLs, and on PostgreSQL
    // neither the poll nor the degraded-listener bound comes within the second.
    let flags = [
        "--change-poll-ms",
        poll_flag(&db),
        "--degraded-cache-ttl-ms",
        "60000",
        "--auth-cache-ttl-secs",
        "60",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let first = Binary::serve(&db, &flags).await;
    let second = Binary::serve(&db, &flags).await;
    let hits = || async {
        let text = crate::metrics::scrape(second.metrics.unwrap()).await;
        crate::metrics::value(&text, "apikeys_auth_cache_hits_total")
    };
    let token = std::fs::read_to_string(db.dir.path().join("data/bootstrap-token")).unwrap().trim().to_owned();
    let channel = |url: String| Channel::from_shared(url).unwrap().connect_lazy();
    let admin =
        Client { inner: ApiKeyServiceClient::new(channel(first.url())), authorization: format!("Bearer {token}") };
    let (on_first, on_second) =
        (ApiKeyServiceClient::new(channel(first.url())), ApiKeyServiceClient::new(channel(second.url())));
    let consumer = Consumer::spawn(second.addr, Duration::from_secs(30)).await;

    // Verified on both replicas and at the consumer, and cached there: the second replica answers
    // a second call from its cache, and the consumer holds an entry.
    let warm = |token: String| {
        let (a, b, consumer, hits) = (on_first.clone(), on_second.clone(), &consumer, &hits);
        async move {
            authenticate_token(&mut a.clone(), &token, &[]).await.unwrap();
            authenticate_token(&mut b.clone(), &token, &[]).await.unwrap();
            let before = hits().await;
            authenticate_token(&mut b.clone(), &token, &[]).await.unwrap();
            assert_eq!(hits().await, before + 1.0, "the second replica cached the credential");
            consumer.list(&bearer(&token)).await.unwrap();
            assert!(!consumer.authenticator().cache().is_empty(), "the consumer cached the credential");
        }
    };

    // Delete.
    let deleted = admin.create("Deleted", ALL).await.unwrap();
    warm(deleted.token.clone()).await;
    let key = deleted.api_key.unwrap();
    admin.delete(&key.id, &key.etag, false).await.unwrap();
    within_bound("delete on the second replica", || refused(&on_second, &deleted.token, &[], Code::Unauthenticated))
        .await;
    within_bound("delete at the consumer", || async {
        matches!(consumer.list(&bearer(&deleted.token)).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // Regenerate: the old secret is refused, the new one accepted.
    let rotated = admin.create("Rotated", ALL).await.unwrap();
    warm(rotated.token.clone()).await;
    let key = rotated.api_key.unwrap();
    let fresh = admin.regenerate(&key.id, &key.etag, false).await.unwrap();
    within_bound("old secret on the second replica", || {
        refused(&on_second, &rotated.token, &[], Code::Unauthenticated)
    })
    .await;
    within_bound("old secret at the consumer", || async {
        matches!(consumer.list(&bearer(&rotated.token)).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;
    authenticate_token(&mut on_second.clone(), &fresh.token, &[]).await.unwrap();
    consumer.list(&bearer(&fresh.token)).await.unwrap();

    // A permission removed.
    let narrowed = admin.create("Narrowed", ALL).await.unwrap();
    warm(narrowed.token.clone()).await;
    consumer.create(&bearer(&narrowed.token), titled("allowed")).await.unwrap();
    let key = narrowed.api_key.unwrap();
    let update = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: key.id.clone(),
            permissions: vec!["read_all_incidents".into(), "edit_all_incidents_fields".into()],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["permissions".into()] }),
        ..Default::default()
    };
    admin.update(update).await.unwrap();
    within_bound("removed permission on the second replica", || {
        refused(&on_second, &narrowed.token, &["create_incident"], Code::PermissionDenied)
    })
    .await;
    within_bound("removed permission at the consumer", || async {
        matches!(consumer.create(&bearer(&narrowed.token), titled("denied")).await,
            Err(s) if s.code() == Code::PermissionDenied)
    })
    .await;
    consumer.list(&bearer(&narrowed.token)).await.unwrap();
}

async fn watch(
    client: &ApiKeyServiceClient<Channel>,
    cursor: &str,
) -> Result<Streaming<pb::WatchKeyChangesResponse>, Status> {
    let request = pb::WatchKeyChangesRequest { cursor: cursor.to_owned() };
    Ok(client.clone().watch_key_changes(request).await?.into_inner())
}

async fn next(stream: &mut Streaming<pb::WatchKeyChangesResponse>) -> pb::WatchKeyChangesResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("a message in time").unwrap().unwrap()
}

#[tokio::test]
async fn the_change_stream_resumes_from_a_cursor_and_resets_when_it_cannot() {
    let app = TestApp::spawn_with(|c| c.max_watchers = 2).await;
    let (admin, client) = (app.admin().await, app.client().await);
    let a = admin.create("A", &["read_data"]).await.unwrap().api_key.unwrap();
    let b = admin.create("B", &["read_data"]).await.unwrap().api_key.unwrap();

    // From now: the first message comes at once, with a cursor and nothing else.
    let mut stream = watch(&client, "").await.unwrap();
    let first = next(&mut stream).await;
    assert!(!first.cursor.is_empty() && first.key_digests.is_empty() && !first.reset, "{first:?}");

    // A refused change (stale etag, on b) writes nothing and announces nothing; a real one (of a)
    // is announced, alone.
    let stale = admin.delete(&b.id, "\"999\"", false).await;
    assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    admin.delete(&a.id, "", false).await.unwrap();
    let deleted = next(&mut stream).await;
    assert_eq!(deleted.key_digests, vec![digest(&a.id)]);
    assert!(!deleted.reset);
    drop(stream);

    // Changes while nobody watches arrive on resume, in order.
    admin.regenerate(&b.id, "", false).await.unwrap();
    admin.delete(&b.id, "", false).await.unwrap();
    let mut resumed = watch(&client, &deleted.cursor).await.unwrap();
    let missed = next(&mut resumed).await;
    assert_eq!(missed.key_digests, vec![digest(&b.id), digest(&b.id)]);
    assert!(!missed.reset && missed.cursor != deleted.cursor);

    // At most two watchers: the third is refused until one goes away.
    let _second = watch(&client, "").await.unwrap();
    assert_status(watch(&client, "").await, Code::ResourceExhausted, "TOO_MANY_WATCHERS");
    drop(resumed);
    within_bound("a freed watcher place", || async { watch(&client, "").await.is_ok() }).await;

    // A cursor of another database, or one behind the pruned log, is answered with a reset.
    let (instance, _) = missed.cursor.split_once('.').unwrap();
    let foreign = format!("{}.1", uuid::Uuid::new_v4().simple());
    assert_ne!(instance, foreign.split_once('.').unwrap().0);
    drop(_second);
    let mut other = watch(&client, &foreign).await.unwrap();
    let reset = next(&mut other).await;
    assert!(reset.reset && reset.key_digests.is_empty(), "{reset:?}");
    drop(other);
    let pruned = app.store.prune_changes(chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(pruned, 3, "the three changes are pruned");
    within_bound("a watcher place", || async { watch(&client, "").await.is_ok() }).await;
    let mut late = watch(&client, &first.cursor).await.unwrap();
    assert!(next(&mut late).await.reset, "a cursor behind the pruned log resets");

    // A cursor ahead of the log (a database restored from an older backup) resets too.
    drop(late);
    let ahead = format!("{instance}.{}", 1_000_000);
    within_bound("a watcher place", || async { watch(&client, "").await.is_ok() }).await;
    let mut ahead = watch(&client, &ahead).await.unwrap();
    assert!(next(&mut ahead).await.reset, "a cursor ahead of the log resets");
    drop(ahead);

    // Malformed cursors name the field.
    let status = watch(&client, "not-a-cursor").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["cursor"]);
}

/// Kills the change listeners' connections to the test database.
async fn kill_listeners(app: &TestApp) {
    let kill = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{LISTENER_APPLICATION_NAME}' AND datname = current_database()"
    );
    app.store.connection().execute_unprepared(&kill).await.unwrap();
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(limit, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"));
}

/// Two replicas on PostgreSQL whose log is read only once a minute, the second one's listener up;
/// `None` on SQLite, which has no listener (one process, and the log is read after every local
/// change).
async fn listening_replicas(degraded_cache_ttl_ms: u64) -> Option<(TestApp, TestApp)> {
    let first = TestApp::spawn_with(|c| {
        c.change_poll_ms = 60_000;
        c.degraded_cache_ttl_ms = degraded_cache_ttl_ms;
    })
    .await;
    first.db.pg.as_ref()?;
    let second = first.replica().await;
    let stats = second.feed.stats();
    wait_for("the listener connects", Duration::from_secs(5), || stats.listener_up.load(Ordering::Relaxed)).await;
    Some((first, second))
}

#[tokio::test]
async fn a_lost_listener_reconnects_and_no_revoked_credential_passes_afterwards() {
    // Neither the poll nor the degraded TTL may hide a missed notification here: only the flush on
    // reconnect can.
    let Some((first, second)) = listening_replicas(60_000).await else { return };
    let stats = second.feed.stats();
    let up = || stats.listener_up.load(Ordering::Relaxed);
    let connects = stats.listener_connects.load(Ordering::Relaxed);

    let admin = first.admin().await;
    let on_second = second.client().await;
    let revoked = admin.create("Revoked", &["read_data"]).await.unwrap();
    let kept = admin.create("Kept", &["read_data"]).await.unwrap();
    for token in [&revoked.token, &kept.token] {
        authenticate_token(&mut on_second.clone(), token, &[]).await.unwrap();
    }

    // Revoke while the listener is down: its notification is lost.
    second.feed.pause_listener_reconnect_for_tests(Duration::from_millis(500));
    kill_listeners(&first).await;
    wait_for("the listener notices", Duration::from_secs(5), || !up()).await;
    let key = revoked.api_key.unwrap();
    admin.delete(&key.id, &key.etag, false).await.unwrap();

    wait_for("the listener reconnects", Duration::from_secs(10), || {
        stats.listener_connects.load(Ordering::Relaxed) > connects
    })
    .await;
    assert!(refused(&on_second, &revoked.token, &[], Code::Unauthenticated).await, "a revoked credential passed");
    // Everything cached before was dropped on reconnect, not just what the log names: the kept key
    // is verified again (a miss), and still passes.
    let cache = second.authenticator.cache();
    let hits = cache.hits();
    authenticate_token(&mut on_second.clone(), &kept.token, &[]).await.unwrap();
    assert_eq!(cache.hits(), hits, "the cache was not flushed on reconnect");
}

#[tokio::test]
async fn while_the_listener_is_down_cached_verifications_are_trusted_only_briefly() {
    let Some((first, second)) = listening_replicas(200).await else { return };
    let stats = second.feed.stats();
    let up = || stats.listener_up.load(Ordering::Relaxed);
    let admin = first.admin().await;
    let on_second = second.client().await;
    let revoked = admin.create("Revoked", &["read_data"]).await.unwrap();
    authenticate_token(&mut on_second.clone(), &revoked.token, &[]).await.unwrap();
    let hits = second.authenticator.cache().hits();
    authenticate_token(&mut on_second.clone(), &revoked.token, &[]).await.unwrap();
    assert_eq!(second.authenticator.cache().hits(), hits + 1, "cached");

    // The listener stays down for seconds; the change is made meanwhile.
    second.feed.pause_listener_reconnect_for_tests(Duration::from_secs(5));
    kill_listeners(&first).await;
    wait_for("the listener notices", Duration::from_secs(5), || !up()).await;
    let key = revoked.api_key.unwrap();
    admin.delete(&key.id, &key.etag, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!up(), "the listener is still down");
    assert!(refused(&on_second, &revoked.token, &[], Code::Unauthenticated).await, "a stale cache entry was trusted");
}

#[tokio::test]
async fn the_listener_uses_its_own_url_when_one_is_given() {
    let db = TestDb::new().await;
    if db.pg.is_none() {
        return;
    }
    // A listener URL where nothing listens: the server serves, the listener stays down, and the
    // cache is trusted only for the degraded TTL.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = db.config();
    config.listener_database_url = Some(format!("postgres://postgres@{dead}/test").into());
    let app = TestApp::start(db, config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!app.feed.stats().listener_up.load(Ordering::Relaxed), "listening through the wrong URL");
    authenticate_token(&mut app.client().await, &app.admin_token, &[]).await.unwrap();

    // The same URL as the pool's: up.
    let mut config = app.config.clone();
    config.listener_database_url = Some(pg_url(&app).into());
    let good = app.replica_with(config).await;
    wait_for("the listener connects", Duration::from_secs(5), || good.feed.stats().listener_up.load(Ordering::Relaxed))
        .await;
}

fn pg_url(app: &TestApp) -> String {
    app.config.database_url.as_ref().unwrap().expose().to_owned()
}

/// Appends `n` changes of random keys to the log, as other replicas would have; returns their IDs.
async fn append_changes(app: &TestApp, n: usize) -> Vec<uuid::Uuid> {
    use apikeys::store::entities::key_change;
    use sea_orm::{ActiveValue::Set, EntityTrait as _};
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    for chunk in ids.chunks(1000) {
        let rows = chunk.iter().map(|id| key_change::ActiveModel {
            key_id: Set(*id),
            org_id: Set(uuid::Uuid::new_v4()),
            time: Set(chrono::Utc::now()),
            ..Default::default()
        });
        key_change::Entity::insert_many(rows).exec(app.store.connection()).await.unwrap();
    }
    ids
}

#[tokio::test]
async fn a_resume_replays_in_bounded_messages_and_too_long_a_backlog_resets() {
    let app = TestApp::spawn().await;
    let client = app.client().await;
    let start = next(&mut watch(&client, "").await.unwrap()).await.cursor;

    // 1500 missed changes: two messages of at most a thousand, in log order, then live.
    let ids = append_changes(&app, 1500).await;
    let mut resumed = watch(&client, &start).await.unwrap();
    let (first, second) = (next(&mut resumed).await, next(&mut resumed).await);
    assert_eq!((first.key_digests.len(), second.key_digests.len()), (1000, 500));
    let replayed: Vec<Vec<u8>> = first.key_digests.into_iter().chain(second.key_digests).collect();
    let expected: Vec<Vec<u8>> = ids.iter().map(|id| digest(&id.to_string())).collect();
    assert_eq!(replayed, expected);
    assert!(!first.reset && !second.reset);
    drop(resumed);

    // More than ten thousand missed: a reset, not an unbounded replay.
    append_changes(&app, 10_001).await;
    let mut behind = watch(&client, &second.cursor).await.unwrap();
    let reset = next(&mut behind).await;
    assert!(reset.reset && reset.key_digests.is_empty(), "{} digests", reset.key_digests.len());
}

/// A TCP proxy to `upstream` that can be frozen: it then stops passing bytes either way but keeps
/// every connection open, as a network partition or a dropped NAT entry would.
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            for (mut from, mut to, flag) in [
                (
                    Box::new(in_read) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(out_write) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    flag.clone(),
                ),
                (Box::new(out_read), Box::new(in_write), flag.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buffer).await {
                        while flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if to.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Held open while frozen: a silent connection, not a closed one.
                    while flag.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            }
        }
    });
    (addr, frozen)
}

#[tokio::test]
async fn a_listener_connection_that_goes_silent_is_noticed_and_the_cache_is_distrusted() {
    let db = TestDb::new().await;
    let Some(pg) = &db.pg else { return };
    let url: url::Url = pg.url.parse().unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432)).parse().unwrap();
    let (proxy, frozen) = freezable_proxy(upstream).await;
    let mut through_proxy = url.clone();
    through_proxy.set_port(Some(proxy.port())).unwrap();
    let mut config = db.config();
    config.listener_database_url = Some(through_proxy.to_string().into());
    config.degraded_cache_ttl_ms = 200;
    let app = TestApp::start(db, config).await;
    let stats = app.feed.stats();
    wait_for("the listener connects", Duration::from_secs(5), || stats.listener_up.load(Ordering::Relaxed)).await;

    frozen.store(true, Ordering::Relaxed);
    // Noticed by the ping (every 5 s, answered within 5 s): no reset, no error, just silence.
    wait_for("the silent listener is noticed", Duration::from_secs(12), || !stats.listener_up.load(Ordering::Relaxed))
        .await;
    let cache = app.authenticator.cache();
    let mut client = app.client().await;
    authenticate_token(&mut client, &app.admin_token, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let hits = cache.hits();
    authenticate_token(&mut client, &app.admin_token, &[]).await.unwrap();
    assert_eq!(cache.hits(), hits, "an entry older than degraded_cache_ttl_ms was trusted while the listener was down");
    frozen.store(false, Ordering::Relaxed);
}
