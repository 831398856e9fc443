//! A cap on the RPCs one client address has in flight. A server answers calls in proportion to how
//! many each client keeps in flight, so without a cap one client flooding forged credentials with
//! hundreds of calls takes the server from everyone else. Calls beyond the cap are refused before
//! any parsing with RESOURCE_EXHAUSTED (`PEER_BUSY`): at once, unless the address has also spent its
//! budget of failed authentications ([`crate::failure_budget`]); a flooder's refusals are then held
//! for the tarpit, so it cannot make the server spend its time refusing it. A call counts until its
//! response headers are sent.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
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
    quota::{Quota, Slot},
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
    cap: Option<Arc<Cap>>,
}

/// The counts, and the budget that decides whether a refusal waits for the tarpit. One `Arc`:
/// the stack is cloned for every call.
#[derive(Debug)]
struct Cap {
    in_flight: Arc<Quota<IpAddr>>,
    budget: Option<Arc<FailureBudget>>,
}

impl PeerLimitLayer {
    /// At most `max` calls in flight per client address (0 means no cap); refusals to addresses
    /// that spent their failure `budget` are held for the tarpit.
    pub fn new(max: usize, budget: Option<Arc<FailureBudget>>) -> Self {
        Self { cap: (max > 0).then(|| Arc::new(Cap { in_flight: Quota::new(max), budget })) }
    }
}

impl<S> tower::Layer<S> for PeerLimitLayer {
    type Service = PeerLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerLimit { inner, cap: self.cap.clone() }
    }
}

/// The service produced by [`PeerLimitLayer`].
#[derive(Debug, Clone)]
pub struct PeerLimit<S> {
    inner: S,
    cap: Option<Arc<Cap>>,
}

pin_project_lite::pin_project! {
    /// The future of [`PeerLimit`]: the inner call holding its slot, or a refusal (boxed: only
    /// refusals pay for the allocation).
    #[project = PeerLimitProj]
    pub enum PeerLimitFuture<F, ResBody> {
        /// Within the cap: the slot is given back when the call's future ends or is dropped.
        Admitted { #[pin] future: F, slot: Option<Slot<IpAddr>> },
        /// Over the cap.
        Refused { refusal: BoxFuture<Response<ResBody>> },
    }
}

impl<F, ResBody, E> Future for PeerLimitFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            PeerLimitProj::Admitted { future, slot } => {
                let response = std::task::ready!(future.poll(cx));
                // Given back once the response headers are ready (see the module docs).
                drop(slot.take());
                Poll::Ready(response)
            }
            PeerLimitProj::Refused { refusal } => refusal.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for PeerLimit<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = PeerLimitFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let slot = match self.cap.as_ref().zip(peer(&request)) {
            Some((cap, ip)) => match cap.in_flight.take(ip) {
                None => {
                    let flooding = cap.budget.as_ref().is_some_and(|budget| budget.exhausted(ip));
                    let refusal = Box::pin(async move {
                        if flooding {
                            tokio::time::sleep(TARPIT).await;
                        }
                        Status::from(Error::PeerBusy).into_http()
                    });
                    return PeerLimitFuture::Refused { refusal };
                }
                slot => slot,
            },
            // No cap, or not over TCP: nothing to count.
            None => None,
        };
        PeerLimitFuture::Admitted { future: self.inner.call(request), slot }
    }
}
