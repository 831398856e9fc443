//! The gRPC client pieces the load-style benchmarks share: a connected channel and an
//! authenticated request.

use std::net::SocketAddr;

use tonic::{Request, transport::Channel};

/// A connected plaintext channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect")
}

/// `message` with `Bearer token` in its `authorization` metadata.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}
