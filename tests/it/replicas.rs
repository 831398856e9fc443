//! Clients of several replicas (`apikeys::replicas`): calls are balanced over the replicas that
//! report SERVING, and losing one fails no call beyond those in flight to it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use apikeys::{
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    replicas::{ReplicaConfig, Replicas, RetryUnsent},
};

use crate::harness::*;

async fn replicas(urls: &[String]) -> Replicas {
    let config = ReplicaConfig { refresh: Duration::from_millis(200), ..ReplicaConfig::default() };
    Replicas::connect(urls, config, Arc::new(|endpoint, _| Ok(endpoint))).await.unwrap()
}

async fn authenticate(client: &mut ApiKeyServiceClient<RetryUnsent>, token: &str) -> Result<(), tonic::Status> {
    let request = pb::AuthenticateRequest { token: token.to_owned(), ..Default::default() };
    client.authenticate(request).await.map(drop)
}

async fn wait_serving(replicas: &Replicas, n: usize) {
    for _ in 0..500 {
        if replicas.serving() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} replicas serving, not {n}", replicas.serving());
}

#[tokio::test]
async fn a_killed_replica_fails_no_call_beyond_those_in_flight_to_it() {
    const WORKERS: usize = 4;
    let db = TestDb::new().await;
    let mut first = Binary::serve(&db, &[]).await;
    let second = Binary::serve(&db, &[]).await;
    let set = replicas(&[first.url(), second.url()]).await;
    wait_serving(&set, 2).await;
    let token = std::fs::read_to_string(db.dir.path().join("data/bootstrap-token")).unwrap().trim().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let mut client = ApiKeyServiceClient::new(set.channel());
            let (stop, ok, failed, token) = (stop.clone(), ok.clone(), failed.clone(), token.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match authenticate(&mut client, &token).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "calls go through");
    first.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("calls: {ok} ok, {failed} failed");
    assert!(failed <= WORKERS, "{failed} calls failed; at most the {WORKERS} in flight may");
    assert!(ok > before, "calls keep succeeding on the surviving replica");
    assert_eq!(set.serving(), 1);
}

#[tokio::test]
async fn a_name_counts_every_address_it_resolves_to_and_only_serving_ones_get_calls() {
    let app = TestApp::spawn().await;
    // `localhost` may resolve to ::1 as well as 127.0.0.1; the server listens on the latter only.
    let set = replicas(&[format!("http://localhost:{}", app.addr.port())]).await;
    wait_serving(&set, 1).await;
    let mut client = ApiKeyServiceClient::new(set.channel());
    for _ in 0..20 {
        authenticate(&mut client, &app.admin_token).await.unwrap();
    }
    // Nothing serving: a bounded wait, then a clear error.
    let none = Replicas::connect(
        &["http://127.0.0.1:1".to_owned()],
        ReplicaConfig { connect_timeout: Duration::from_millis(300), ..ReplicaConfig::default() },
        Arc::new(|endpoint, _| Ok(endpoint)),
    )
    .await
    .unwrap_err();
    assert!(none.to_string().contains("no apikeys replica is serving"), "{none}");
}

#[tokio::test]
async fn a_call_that_reached_a_server_is_never_sent_again() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    // A server whose health Check counts calls and never answers ...
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let route = axum::routing::post(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>()
    });
    let router = axum::Router::new().route("/grpc.health.v1.Health/Check", route);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let routes = tonic::service::Routes::from(router);
    tokio::spawn(tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming));

    // ... behind a proxy whose connections the test cuts, while the server stays up.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let held = links.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = proxy.accept().await {
            let link = tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(server).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
            held.lock().unwrap().push(link);
        }
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{proxy_addr}")).unwrap().connect_lazy();
    let mut client = HealthClient::new(RetryUnsent::from(channel));
    let call = tokio::spawn(async move { client.check(HealthCheckRequest::default()).await });
    for _ in 0..500 {
        if calls.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the call reached the server");
    for link in links.lock().unwrap().drain(..) {
        link.abort();
    }
    let result = tokio::time::timeout(Duration::from_secs(5), call).await.expect("the call ends").unwrap();
    assert!(result.is_err(), "a cut call fails");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a call that reached the server was sent again");
}
