//! The caller's deadline, for the work a request does on its behalf: a layer reads `grpc-timeout`
//! and runs the request inside a task-local scope, and the store caps every database wait at what
//! is left of it (minus a margin to send the answer), so a caller with a 2 s deadline gets
//! UNAVAILABLE in under 2 s instead of DEADLINE_EXCEEDED when the database hangs.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The time left before the current request's deadline, if it has one.
pub fn remaining() -> Option<Duration> {
    DEADLINE.try_with(|deadline| deadline.saturating_duration_since(Instant::now())).ok()
}

/// The current request's deadline, to carry into a task it spawns ([`within`]).
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` under `deadline` (from [`current`]), or under none.
pub async fn within<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// How long a wait may last within `left`: what is left, less a tenth of it (at most 100 ms) to
/// send the answer.
pub fn budget(left: Duration) -> Duration {
    left.saturating_sub((left / 10).min(Duration::from_millis(100)))
}

/// A `grpc-timeout` header value (`1S`, `250m`, ...) as a duration; `None` if malformed.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Tower layer that scopes each request to its `grpc-timeout` deadline; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The future of [`DeadlineService`]: the inner call, scoped to its deadline if it has one
    /// (not boxed: this wraps every call).
    #[project = DeadlineProj]
    pub enum DeadlineFuture<F> {
        /// A call with a `grpc-timeout`.
        Scoped { #[pin] future: tokio::task::futures::TaskLocalFuture<Instant, F> },
        /// A call without one.
        Unscoped { #[pin] future: F },
    }
}

impl<F: Future> Future for DeadlineFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            DeadlineProj::Scoped { future } => future.poll(cx),
            DeadlineProj::Unscoped { future } => future.poll(cx),
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let future = self.inner.call(request);
        match deadline {
            Some(deadline) => DeadlineFuture::Scoped { future: DEADLINE.scope(deadline, future) },
            None => DeadlineFuture::Unscoped { future },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_garbage_does_not() {
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        for bad in [&b""[..], b"S", b"2", b"2s", b"-1S", b"123456789S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_deadline_is_seen_inside_the_scope_only() {
        assert_eq!(remaining(), None);
        let left = DEADLINE.scope(Instant::now() + Duration::from_secs(2), async { remaining() }).await.unwrap();
        assert!(left <= Duration::from_secs(2) && left > Duration::from_millis(1900));
        assert_eq!(budget(Duration::from_secs(2)), Duration::from_millis(1900));
        assert_eq!(budget(Duration::from_millis(200)), Duration::from_millis(180));
    }
}
