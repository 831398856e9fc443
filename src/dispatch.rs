//! Calls of the API key service go straight to it; everything else (health, reflection, unknown
//! paths) goes through tonic's router.
//!
//! tonic routes every call through an axum router: a path match, URL parameters put into the
//! request, a boxed clone of the route's service, about 0.5 µs per call (the load benchmark's
//! profile, `BENCHMARKS.md`). For the service that takes nearly every call, `Authenticate` on every
//! request of the platform, a prefix comparison does the same job. The service answers its own
//! unknown methods UNIMPLEMENTED, as the router would.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, server::NamedService};

/// Tower layer sending the calls of `service` (named by its [`NamedService::NAME`]) to it directly,
/// and the others to the layer's inner service (the router).
#[derive(Debug, Clone)]
pub struct DispatchLayer<T> {
    service: T,
}

impl<T: NamedService> DispatchLayer<T> {
    /// A layer dispatching the calls of `service` to it.
    pub fn new(service: T) -> Self {
        Self { service }
    }
}

impl<T: Clone + NamedService, S> tower::Layer<S> for DispatchLayer<T> {
    type Service = Dispatch<T, S>;

    fn layer(&self, router: S) -> Self::Service {
        Dispatch { service: self.service.clone(), name: T::NAME, router }
    }
}

/// The service of [`DispatchLayer`].
#[derive(Debug, Clone)]
pub struct Dispatch<T, S> {
    service: T,
    // The service's name (`package.Service`): its calls' paths are `/{name}/{method}`. Not a
    // prefix string built once: the whole stack is cloned for every call.
    name: &'static str,
    router: S,
}

impl<T, S, B> tower::Service<http::Request<B>> for Dispatch<T, S>
where
    T: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture<T::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready (generated services and tonic's router are), but a call may go to
        // either, so both must be.
        std::task::ready!(self.service.poll_ready(cx))?;
        self.router.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_call_of(request.uri().path(), self.name) {
            DispatchFuture::Service { future: self.service.call(request) }
        } else {
            DispatchFuture::Router { future: self.router.call(request) }
        }
    }
}

/// Whether `path` is `/{service}/{anything}`.
fn is_call_of(path: &str, service: &str) -> bool {
    path.strip_prefix('/').and_then(|rest| rest.strip_prefix(service)).is_some_and(|rest| rest.starts_with('/'))
}

pin_project_lite::pin_project! {
    /// The future of [`Dispatch`]: the service's call or the router's.
    #[project = DispatchProj]
    pub enum DispatchFuture<A, B> {
        /// A call of the dispatched service.
        Service { #[pin] future: A },
        /// Any other call.
        Router { #[pin] future: B },
    }
}

impl<A, B> Future for DispatchFuture<A, B>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            DispatchProj::Service { future } => future.poll(cx),
            DispatchProj::Router { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_call_of;

    #[test]
    fn only_paths_under_the_service_name_are_its_calls() {
        let service = "apikeys.v1.ApiKeyService";
        assert!(is_call_of("/apikeys.v1.ApiKeyService/Authenticate", service));
        assert!(is_call_of("/apikeys.v1.ApiKeyService/", service), "the service answers UNIMPLEMENTED itself");
        for other in [
            "/apikeys.v1.ApiKeyServiceX/Authenticate",
            "/apikeys.v1.ApiKeyService",
            "apikeys.v1.ApiKeyService/A",
            "/grpc.health.v1.Health/Check",
            "",
        ] {
            assert!(!is_call_of(other, service), "{other}");
        }
    }
}
