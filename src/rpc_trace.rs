//! The per-RPC tower layer, outermost on the server: one `rpc` span per call with `method`, `code`,
//! `latency_ms` and the authenticated `key_id` (recorded by the auth layer inside it; never a secret),
//! a closing `rpc finished` event, and the RPC metrics.
//!
//! An RPC ends, and is logged and counted with its code, when its status is known: at the headers of
//! a trailers-only response (how tonic answers a failed unary call), else at the trailers after the
//! last message, so a streaming call that fails after its first message counts with its real code.
//! A call dropped before its response, or a response body dropped before its end (the client went
//! away), counts as CANCELLED.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::Code;
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

pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// What is known when an RPC ends: reported once, by whichever comes first of a trailers-only
/// response, the trailers, a body error, or the body being dropped unfinished.
struct Finish {
    /// The method's position in [`methods::all`].
    method: Option<usize>,
    started: Instant,
    metrics: Arc<Metrics>,
    span: tracing::Span,
}

impl Finish {
    fn done(self, code: Code) {
        let latency = self.started.elapsed();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let code_text = code_name(code);
        // The span is off at the default level: then there is nothing to record.
        let traced = !self.span.is_disabled();
        if traced {
            self.span.record("code", code_text);
            self.span.record("latency_ms", latency_ms);
        }
        // One line per RPC costs a third of the throughput at INFO: successes and client errors
        // (a flood of bad credentials included) log at DEBUG, failures of the server at WARN.
        // Mutations log their own INFO line where they happen.
        match code {
            Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => self.span.in_scope(|| {
                tracing::warn!(method = methods::label(self.method), code = code_text, latency_ms, "rpc finished");
            }),
            _ if traced => self.span.in_scope(|| tracing::debug!("rpc finished")),
            _ => {}
        }
        self.metrics.observe_rpc(self.method, code_text, latency);
    }
}

/// The header's name made once: looked up by a string, it would be parsed on every call.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The gRPC status code carried by `headers` (trailers, or the headers of a trailers-only
/// response): only `grpc-status` is read, not the message or details (once per RPC). An unreadable
/// one is UNKNOWN, as gRPC clients read it.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get(&GRPC_STATUS)?;
    Some(value.to_str().ok().and_then(|v| v.parse::<i32>().ok()).map_or(Code::Unknown, Code::from))
}

pin_project! {
    /// A response body that reports the RPC's end: its trailers' `grpc-status`, a stream error
    /// (UNKNOWN), or CANCELLED if it is dropped before the end (the client went away).
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }

    impl<B> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.done(Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(|trailers| status_code(trailers).unwrap_or(Code::Ok)),
            // A stream error, or the end without trailers: a gRPC response always has them.
            Some(Err(_)) | None => Some(Code::Unknown),
        };
        if let Some(code) = code
            && let Some(finish) = this.finish.take()
        {
            finish.done(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The future of [`RpcTrace`]: the inner call in its span, then the response with a body that
    /// reports the end (not boxed: this wraps every call).
    pub struct TracedFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        finish: Option<Finish>,
    }

    impl<F> PinnedDrop for TracedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its response: the client reset the stream or went away.
            if let Some(finish) = this.project().finish.take() {
                finish.done(Code::Cancelled);
            }
        }
    }
}

impl<F, ResBody, E> std::future::Future for TracedFuture<F>
where
    F: std::future::Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TracedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let finish = this.finish.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (how tonic answers a failed unary call) ends here; any
                // other ends with its body's trailers.
                let finish = match (status_code(response.headers()), finish) {
                    (Some(code), Some(finish)) => {
                        finish.done(code);
                        None
                    }
                    (_, finish) => finish,
                };
                Ok(response.map(|inner| TracedBody { inner, finish }))
            }
            Err(error) => {
                if let Some(finish) = finish {
                    finish.done(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcTrace<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let method = methods::find(path);
        // DEBUG: at the default level the span costs nothing (it is ~5% of the hot path's
        // throughput); failures of the server carry their fields in their own WARN event, and
        // mutations log who did what themselves.
        let span = tracing::debug_span!(
            "rpc",
            // A client-chosen path is cut short so it cannot flood the logs (at a character
            // boundary: paths may carry UTF-8).
            method = &path[..path.floor_char_boundary(MAX_LOGGED_PATH)],
            code = field::Empty,
            latency_ms = field::Empty,
            key_id = field::Empty,
            user_id = field::Empty,
        );
        let finish = Finish { method, started: Instant::now(), metrics: self.metrics.clone(), span: span.clone() };
        let future = span.in_scope(|| self.inner.call(request));
        TracedFuture { inner: future.instrument(span), finish: Some(finish) }
    }
}

/// The longest request path logged, in bytes.
const MAX_LOGGED_PATH: usize = 200;
