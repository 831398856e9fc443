//! Every call's deadline, kept: a layer gives each call the shorter of its `grpc-timeout` and the
//! server's own limit (`transport.request_timeout_secs`), answers DEADLINE_EXCEEDED when it passes,
//! and runs the call inside a task-local scope, so the store caps every database wait at what is
//! left of it (minus a margin to send the answer): a caller with a 2 s deadline gets UNAVAILABLE
//! in under 2 s instead of DEADLINE_EXCEEDED when the database hangs.

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

/// The header's name made once: looked up by a string, it would be parsed on every call.
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// How much sooner than its `grpc-timeout` a call is answered DEADLINE_EXCEEDED: more than the
/// timer wheel's 1 ms tick, so that this layer's timer fires before tonic's.
const AHEAD_OF_TONIC: Duration = Duration::from_millis(5);

/// The longest timeout honoured, so that adding it to the clock cannot overflow (a year).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Tower layer that gives each call a deadline and keeps it; see the module docs.
///
/// A call's deadline is the shorter of its `grpc-timeout` (less 5 ms) and the server's `limit`
/// (`transport.request_timeout_secs`). The call runs inside the deadline's scope ([`remaining`]),
/// and if its response has not started by then, the call is dropped and answered
/// DEADLINE_EXCEEDED; a streaming response, once started, is not cut. The timer is armed only when
/// the call first waits: a call answered at once (a cached credential) never touches the timer
/// wheel. (tonic still keeps a `grpc-timeout` itself, outside every layer; this one fires first.)
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// A layer allowing each call at most `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit: limit.min(MAX_TIMEOUT) }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner, limit: self.limit }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    limit: Duration,
}

pin_project_lite::pin_project! {
    /// The future of [`DeadlineService`]: the inner call in its deadline's scope, and the timer
    /// that ends it (not boxed: this wraps every call).
    pub struct DeadlineFuture<F> {
        #[pin]
        future: tokio::task::futures::TaskLocalFuture<Instant, F>,
        deadline: Instant,
        // Whose deadline it is, for the answer when it passes.
        set_by_caller: bool,
        // Armed when the call first waits.
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F, B, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(output);
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until((*this.deadline).into())));
        }
        if let Some(timer) = this.timer.as_pin_mut() {
            std::task::ready!(timer.poll(cx));
        }
        let message = if *this.set_by_caller {
            "the caller's deadline (grpc-timeout) passed before the call completed"
        } else {
            "the call ran longer than the server allows (transport.request_timeout_secs)"
        };
        Poll::Ready(Ok(tonic::Status::deadline_exceeded(message).into_http()))
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let asked = request.headers().get(&GRPC_TIMEOUT).and_then(|value| parse_grpc_timeout(value.as_bytes()));
        let (timeout, set_by_caller) = match asked {
            // A little before the caller's deadline: tonic runs a timer of its own for the same
            // header, started a moment before this one, and would answer CANCELLED.
            Some(asked) if asked < self.limit => (asked.saturating_sub(AHEAD_OF_TONIC), true),
            _ => (self.limit, false),
        };
        let now = Instant::now();
        // Cannot overflow with MAX_TIMEOUT on a monotonic clock; if it did, the deadline is now.
        let deadline = now.checked_add(timeout).unwrap_or(now);
        let future = DEADLINE.scope(deadline, self.inner.call(request));
        DeadlineFuture { future, deadline, set_by_caller, timer: None }
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

    /// A server of one call, under a [`DeadlineLayer`] of `limit`, whose handler reports the time
    /// left it sees and then answers after `takes` (or never).
    async fn call(
        limit: Duration,
        grpc_timeout: Option<&str>,
        takes: Option<Duration>,
    ) -> (tonic::Code, Option<Duration>) {
        use tower::{Layer as _, ServiceExt as _};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let handler = {
            let seen = seen.clone();
            tower::service_fn(move |_: http::Request<()>| {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap() = remaining();
                    match takes {
                        Some(takes) => tokio::time::sleep(takes).await,
                        None => std::future::pending().await,
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
                }
            })
        };
        let mut request = http::Request::new(());
        if let Some(value) = grpc_timeout {
            request.headers_mut().insert("grpc-timeout", value.parse().unwrap());
        }
        let response = DeadlineLayer::new(limit).layer(handler).oneshot(request).await.unwrap();
        let code = response
            .headers()
            .get("grpc-status")
            .map_or(tonic::Code::Ok, |value| tonic::Code::from_bytes(value.as_bytes()));
        let seen = *seen.lock().unwrap();
        (code, seen)
    }

    /// Whether `elapsed` is `expected`, give or take a loaded machine's scheduling.
    fn about(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed < expected + Duration::from_secs(2)
    }

    #[tokio::test]
    async fn a_call_past_the_server_limit_is_answered_deadline_exceeded() {
        let started = Instant::now();
        let (code, seen) = call(Duration::from_millis(300), None, None).await;
        assert_eq!(code, tonic::Code::DeadlineExceeded);
        assert!(about(started.elapsed(), Duration::from_millis(300)), "answered when the limit passed");
        assert!(
            seen.is_some_and(|left| left <= Duration::from_millis(300)),
            "the limit is the call's deadline: {seen:?}"
        );
    }

    #[tokio::test]
    async fn the_shorter_of_grpc_timeout_and_the_limit_wins() {
        let started = Instant::now();
        let (code, seen) = call(Duration::from_secs(30), Some("200m"), None).await;
        assert_eq!(code, tonic::Code::DeadlineExceeded);
        // 5 ms early, ahead of tonic's own timer for the header.
        assert!(about(started.elapsed(), Duration::from_millis(195)));
        assert!(seen.is_some_and(|left| left <= Duration::from_millis(195)), "{seen:?}");

        let started = Instant::now();
        let (code, _) = call(Duration::from_millis(300), Some("1H"), None).await;
        assert_eq!(code, tonic::Code::DeadlineExceeded);
        assert!(about(started.elapsed(), Duration::from_millis(300)));
    }

    #[tokio::test]
    async fn calls_within_their_deadline_are_answered_by_their_handler() {
        assert_eq!(call(Duration::from_secs(30), None, Some(Duration::ZERO)).await.0, tonic::Code::Ok);
        let waits = Some(Duration::from_millis(100));
        assert_eq!(call(Duration::from_secs(30), Some("20S"), waits).await.0, tonic::Code::Ok);
    }
}
