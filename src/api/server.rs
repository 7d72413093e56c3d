//! The HTTP server under the API and the ESA facade: hyper's HTTP/1 connection loop with the
//! slow-client limits `axum::serve` has no knobs for, and graceful shutdown.
//!
//! - The request head must arrive within `header_timeout` (hyper's header read timeout, which
//!   also closes a keep-alive connection idle that long); a client trickling headers is closed.
//! - A request body may be silent at most `body_idle_timeout`, and must keep up `body_min_rate`
//!   bytes per second of waiting once the first `body_idle_timeout` of waiting is used up
//!   ([`SlowBody`]). Only time spent waiting on the client counts, so a handler busy with the
//!   database never costs the client. A body cut off is answered 408 (the caller's error shape)
//!   and the connection closed.
//! - At most `max_connections` are open; further clients wait in the listen backlog.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, error, warn};

use crate::config::HttpLimits;

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets requests in flight
/// finish within `drain`, and drops what is left. `on_body_timeout` is the 408 answer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    on_body_timeout: fn() -> Response,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        // A permit first: at the cap, connections wait in the backlog rather than being accepted.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    error!("accepting an API connection failed: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        let conn = Connection { app: app.clone(), peer, limits, on_body_timeout };
        conns.spawn(conn.run(stream, shutdown.clone(), permit));
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(open = conns.len(), "API connections still open after the shutdown timeout; closing them");
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[derive(Clone)]
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: HttpLimits,
    on_body_timeout: fn() -> Response,
}

impl Connection {
    async fn run(self, stream: tokio::net::TcpStream, shutdown: CancellationToken, _permit: impl Send) {
        let _ = stream.set_nodelay(true);
        let peer = self.peer;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout);
        let service = hyper::service::service_fn(move |req| self.clone().handle(req));
        let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                // Finish the request in flight (if any), then close.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            // A client cut off for a slow head lands here (hyper closes without an answer).
            debug!(%peer, "API connection ended: {e}");
        }
    }

    async fn handle(mut self, req: Request<Incoming>) -> Result<Response, Infallible> {
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = Body::new(SlowBody::new(body, &self.limits, timed_out.clone()));
        let request = Request::from_parts(parts, body);
        // A Router is always ready; polled anyway, as tower asks.
        std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut self.app, cx)).await?;
        let response = self.app.call(request).await?;
        if !timed_out.load(Ordering::Relaxed) {
            return Ok(response);
        }
        warn!(peer = %self.peer, "a request body arrived too slowly: answered 408 and closed the connection");
        let mut response = (self.on_body_timeout)();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok(response)
    }
}

/// The body was cut off for arriving too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTimeout;

/// A request body held to the idle and minimum-rate rules (see the module docs). Every byte
/// received earns `1 / min_rate` seconds of waiting on top of a grace of `idle`; a single wait
/// is never longer than `idle`.
struct SlowBody<B> {
    inner: B,
    idle: Duration,
    min_rate: u64,
    bytes: u64,
    /// Time spent waiting on the client in finished waits.
    waited: Duration,
    /// The wait under way: since when, and its deadline.
    wait: Option<(Instant, Pin<Box<Sleep>>)>,
    timed_out: Arc<AtomicBool>,
}

impl<B> SlowBody<B> {
    fn new(inner: B, limits: &HttpLimits, timed_out: Arc<AtomicBool>) -> Self {
        SlowBody {
            inner,
            idle: limits.body_idle_timeout,
            min_rate: limits.body_min_rate.max(1),
            bytes: 0,
            waited: Duration::ZERO,
            wait: None,
            timed_out,
        }
    }

    /// How long the next wait may last: `idle`, or less when the average rate is behind.
    fn allowance(&self) -> Duration {
        let earned = Duration::from_secs_f64(self.bytes as f64 / self.min_rate as f64);
        self.idle.saturating_add(earned).saturating_sub(self.waited).min(self.idle)
    }
}

impl<B> http_body::Body for SlowBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((since, _)) = this.wait.take() {
                    this.waited += since.elapsed();
                }
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref) {
                    this.bytes += data.len() as u64;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.wait.is_none() {
                    let now = Instant::now();
                    this.wait = Some((now, Box::pin(tokio::time::sleep_until(now + this.allowance()))));
                }
                let (_, deadline) = this.wait.as_mut().expect("a wait is under way");
                if deadline.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: u64, waited_s: u64) -> SlowBody<axum::body::Body> {
        let limits =
            HttpLimits { body_idle_timeout: Duration::from_secs(10), body_min_rate: 100, ..HttpLimits::default() };
        let mut b = SlowBody::new(axum::body::Body::empty(), &limits, Arc::default());
        (b.bytes, b.waited) = (bytes, Duration::from_secs(waited_s));
        b
    }

    #[test]
    fn a_wait_is_at_most_idle_and_shrinks_when_the_rate_falls_behind() {
        assert_eq!(body(0, 0).allowance(), Duration::from_secs(10), "a fresh body gets the idle limit");
        assert_eq!(body(0, 4).allowance(), Duration::from_secs(6), "the grace is spent by waiting");
        assert_eq!(body(0, 10).allowance(), Duration::ZERO, "nothing sent in the grace: cut off");
        assert_eq!(body(500, 12).allowance(), Duration::from_secs(3), "each byte earns 1/min_rate s");
        assert_eq!(body(1_000_000, 5).allowance(), Duration::from_secs(10), "never more than idle at once");
    }
}
