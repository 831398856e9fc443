//! The reference incident service, runnable beside apikeys:
//!
//! ```sh
//! cargo run -- serve                                    # apikeys on 127.0.0.1:50051
//! cargo run --example incident_service -- --apikeys http://127.0.0.1:50051 --listen 127.0.0.1:50061
//! ```
//!
//! Flags: `--apikeys URL[,URL...]` (default `http://127.0.0.1:50051`; several replicas, or one name
//! resolving to several, are balanced), `--listen ADDR` (default `127.0.0.1:50061`),
//! `--cache-ttl-secs N` (default 30: the longest a revoked key still passes here while the change
//! stream is down), `--timeout-ms N` (deadline of one Authenticate call, default 2000), `--no-watch`
//! (do not follow apikeys' change stream: the TTL alone bounds revocation). With the environment
//! variable `APIKEYS_USAGE_REPORT_TOKEN` set to the token of a key holding `api_keys_usage_report`,
//! it reports the uses it admits to apikeys every minute and on shutdown. See `service.rs` for
//! what it serves and the rules it applies.

mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use apikeys::{
    auth::{
        remote::{RemoteAuthenticator, RemoteConfig},
        report::UsageReport,
    },
    replicas::{ReplicaConfig, Replicas},
};

struct Args {
    apikeys: Vec<String>,
    listen: SocketAddr,
    config: RemoteConfig,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        apikeys: vec!["http://127.0.0.1:50051".to_owned()],
        listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
        config: RemoteConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--apikeys" => args.apikeys = value()?.split(',').map(str::to_owned).collect(),
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--cache-ttl-secs" => args.config.cache_ttl = Duration::from_secs(number(value()?)?),
            "--timeout-ms" => args.config.timeout = Duration::from_millis(number(value()?)?),
            "--no-watch" => args.config.watch = false,
            "-h" | "--help" => {
                return Err("usage: incident_service [--apikeys URL[,URL...]] [--listen ADDR] \
                            [--cache-ttl-secs N] [--timeout-ms N] [--no-watch]"
                    .to_owned());
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if let Ok(token) = std::env::var("APIKEYS_USAGE_REPORT_TOKEN") {
        let credential = apikeys::auth::Credential::from_token(token.trim())
            .map_err(|_| "APIKEYS_USAGE_REPORT_TOKEN is not an apikeys token".to_owned())?;
        args.config.usage_report = Some(UsageReport::new(credential));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = parse_args()?;
    // Lazy: the service starts even while apikeys is down (requests then get UNAVAILABLE).
    let replicas = Replicas::connect_lazy(&args.apikeys, ReplicaConfig::default(), Arc::new(|e, _| Ok(e)))?;
    let authenticator = Arc::new(RemoteAuthenticator::new(replicas.channel(), args.config.clone())?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "incident service on {} (gRPC and GET /v1/incidents), verifying credentials with {} (cache TTL {:?})",
        listener.local_addr()?,
        args.apikeys.join(", "),
        args.config.cache_ttl
    );
    let shutdown = async {
        // If the signal handler cannot be installed, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    service::serve(listener, authenticator.clone(), service::Store::default(), shutdown).await?;
    if let Err(error) = authenticator.flush_usage().await {
        eprintln!("could not report the last uses to apikeys: {error}");
    }
    Ok(())
}
