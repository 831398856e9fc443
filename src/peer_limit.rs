//! A cap on the RPCs one client address has in flight. A server answers calls in proportion to how
//! many each client keeps in flight, so without a cap one client flooding forged credentials with
//! hundreds of calls takes the server from everyone else. Calls beyond the cap are refused before
//! any parsing with RESOURCE_EXHAUSTED (`PEER_BUSY`): at once, unless the address has also spent its
//! budget of failed authentications ([`crate::failure_budget`]); a flooder's refusals are then held
//! for the tarpit, so it cannot make the server spend its time refusing it. A call counts until its
//! response headers are sent.

use std::{
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{
    Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    error::Error,
    failure_budget::{FailureBudget, TARPIT},
    quota::Quota,
    rpc_trace::BoxFuture,
};

/// The client address of a request served by tonic, over TCP or TLS.
fn peer<B>(request: &Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    let tcp = extensions
        .get::<TcpConnectInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(TlsConnectInfo::get_ref));
    tcp.and_then(TcpConnectInfo::remote_addr).map(|addr| addr.ip())
}

/// Tower layer capping the calls in flight per client address; see the module docs.
#[derive(Debug, Clone)]
pub struct PeerLimitLayer {
    in_flight: Option<Arc<Quota<IpAddr>>>,
    budget: Option<Arc<FailureBudget>>,
}

impl PeerLimitLayer {
    /// At most `max` calls in flight per client address (0 means no cap); refusals to addresses
    /// that spent their failure `budget` are held for the tarpit.
    pub fn new(max: usize, budget: Option<Arc<FailureBudget>>) -> Self {
        Self { in_flight: (max > 0).then(|| Quota::new(max)), budget }
    }
}

impl<S> tower::Layer<S> for PeerLimitLayer {
    type Service = PeerLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerLimit { inner, in_flight: self.in_flight.clone(), budget: self.budget.clone() }
    }
}

/// The service produced by [`PeerLimitLayer`].
#[derive(Debug, Clone)]
pub struct PeerLimit<S> {
    inner: S,
    in_flight: Option<Arc<Quota<IpAddr>>>,
    budget: Option<Arc<FailureBudget>>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for PeerLimit<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let slot = match self.in_flight.as_ref().zip(peer(&request)) {
            Some((in_flight, ip)) => match in_flight.take(ip) {
                None => {
                    let flooding = self.budget.as_ref().is_some_and(|budget| budget.exhausted(ip));
                    return Box::pin(async move {
                        if flooding {
                            tokio::time::sleep(TARPIT).await;
                        }
                        Ok(Status::from(Error::PeerBusy).into_http())
                    });
                }
                slot => slot,
            },
            // No cap, or not over TCP: nothing to count.
            None => None,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(slot);
            response
        })
    }
}
