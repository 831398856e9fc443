//! The per-RPC tower layer, outermost on the server: one `rpc` span per call with `method`, `code`,
//! `latency_ms` and the authenticated `key_id` (recorded by the auth layer inside it; never a secret),
//! a closing `rpc finished` event, and the RPC metrics.
//!
//! The code is read from the response headers: tonic sends a failed unary call as a trailers-only
//! response carrying `grpc-status` there. A response without it is a success whose status travels in
//! the trailers (a streaming call that fails after its first message is counted as OK).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tonic::{Code, Status};
use tracing::{Instrument as _, field};

use crate::{error::code_name, methods, metrics::Metrics};

/// Tower layer adding the span and metrics; see the module docs.
#[derive(Debug, Clone)]
pub struct RpcTraceLayer {
    metrics: Arc<Metrics>,
}

impl RpcTraceLayer {
    /// A layer feeding `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner, metrics: self.metrics.clone() }
    }
}

/// The service produced by [`RpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcTrace<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let method = methods::label(path);
        let span = tracing::info_span!(
            "rpc",
            // A client-chosen path is cut short so it cannot flood the logs (at a character
            // boundary: paths may carry UTF-8).
            method = &path[..path.floor_char_boundary(MAX_LOGGED_PATH)],
            code = field::Empty,
            latency_ms = field::Empty,
            key_id = field::Empty,
        );
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let result = future.await;
                let latency = started.elapsed();
                let code = match &result {
                    Ok(response) => Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code()),
                    Err(_) => Code::Unknown,
                };
                let code_text = code_name(code);
                let span = tracing::Span::current();
                span.record("code", code_text);
                span.record("latency_ms", latency.as_secs_f64() * 1000.0);
                tracing::info!("rpc finished");
                metrics.observe_rpc(method, code_text, latency);
                result
            }
            .instrument(span),
        )
    }
}

/// The longest request path logged, in bytes.
const MAX_LOGGED_PATH: usize = 200;
