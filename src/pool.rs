//! The backend connection pool of one worker thread: keep-alive HTTP/1.1 connections (reused most
//! recent first, at most `MAX_IDLE` kept, closed after the backend's `pool_idle_timeout` unused: on
//! the next call, or by `prune` within a second) and one multiplexed HTTP/2 connection when the
//! backend offers h2 by ALPN, over the hyper-rustls connector (`TCP_NODELAY`, connect timeout,
//! verified TLS; built in `upstream`).
//!
//! Each worker has its own pool, so a request and the backend connection it uses are driven by the
//! same event loop and the locks here are never contended. An HTTP/1.1 connection goes back to the
//! pool when its response body has been read to the end (`PooledBody`); a body dropped early closes
//! it. A request that never left because its pooled connection had just been closed by the backend
//! is sent again on a new connection, as hyper-util's client does; one that left is never resent.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// The TLS-or-plain connector every backend pool dials through.
pub type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
type Sender1 = http1::SendRequest<Full<Bytes>>;
type Sender2 = http2::SendRequest<Full<Bytes>>;
/// A request on its way to a backend, boxed: it is handed by value down the pool's calls (`send`,
/// `send_reused`, `send_h1`, hyper's `try_send_request`), and each hand copied its 256 bytes; a
/// box moves in eight (a `perf probe` on `memmove`: 12 copies a request, 3 KB).
pub type Outgoing = Box<Request<Full<Bytes>>>;

/// Idle keep-alive connections kept per backend and worker: enough for a busy gateway without
/// hoarding sockets.
pub const MAX_IDLE: usize = 256;

/// How long a call waits for another call's dial to an HTTPS backend that may offer h2 (a TLS
/// handshake to a provider takes tens of milliseconds).
const H2_DIAL_WAIT: Duration = Duration::from_millis(500);

/// Why a request got no response headers.
#[derive(Debug)]
pub enum SendError {
    /// No connection: TCP connect, TLS or the HTTP/2 handshake failed (nothing was sent).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The request was (or may have been) sent and the exchange failed.
    Exchange(hyper::Error),
}

pub struct Pool {
    connector: Connector,
    idle: Mutex<Idle>,
    /// Held while dialling a backend that may answer h2, so a burst of calls waits for one
    /// multiplexed connection instead of opening one each.
    dialling: tokio::sync::Mutex<()>,
    /// Cleared once an HTTPS connection came back HTTP/1.1: then calls dial in parallel.
    may_offer_h2: AtomicBool,
    /// `switchyard_backend_connections_total` for this backend: HTTP/1.1 and HTTP/2 connections opened.
    opened: [prometheus::IntCounter; 2],
    timeouts: Timeouts,
}

/// A backend's pool timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `connect_timeout`, for the whole dial: TCP, TLS and the HTTP/2 handshake.
    pub connect: Duration,
    /// `pool_idle_timeout`: an idle HTTP/1.1 connection unused this long is closed.
    pub idle: Duration,
}

#[derive(Default)]
struct Idle {
    /// Oldest at the front; taken from the back.
    h1: VecDeque<(Sender1, Instant)>,
    h2: Option<Sender2>,
}

impl Pool {
    /// `opened`: the counters of HTTP/1.1 and HTTP/2 connections opened, in that order.
    pub fn new(connector: Connector, opened: [prometheus::IntCounter; 2], timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Pool {
            connector,
            opened,
            timeouts,
            idle: Mutex::new(Idle::default()),
            dialling: tokio::sync::Mutex::new(()),
            may_offer_h2: AtomicBool::new(true),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while holding the lock leaves only a list of senders: still consistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req` (its URI absolute: scheme and authority pick the connection) and waits for the
    /// response headers. The caller bounds the wait (the backend's first-byte deadline).
    pub async fn send(self: &Arc<Self>, req: Outgoing) -> Result<Response<PooledBody>, SendError> {
        let uri = req.uri().clone();
        let req = match self.send_reused(req, &uri).await {
            Err(Unsent::Back(req, _)) => req,
            done => return done.map_err(Unsent::into_error),
        };
        // Boxed: the dial (connect, TLS, handshake) is a future of kilobytes, and unboxed it would
        // make every caller's future that large, copied by every await on the way down.
        Box::pin(self.send_fresh(req, uri)).await
    }

    /// Dials, then sends. A backend that may answer h2 is dialled by one call at a time, so a burst
    /// shares the one multiplexed connection the first dial brings.
    async fn send_fresh(self: &Arc<Self>, req: Outgoing, uri: Uri) -> Result<Response<PooledBody>, SendError> {
        let gate = self.h2_gate(&uri).await;
        let fresh = match self.h2() {
            Some(h2) => Fresh::H2(h2), // brought by another call's dial while this one waited
            None => self.connect(&uri).await?,
        };
        drop(gate);
        match fresh {
            Fresh::H1(h1, ended) => match self.send_h1(h1, req, &uri).await {
                Ok(resp) => Ok(resp),
                // The new connection failed its first request; the error that ended it may say
                // why better (a TLS 1.3 server refuses a client certificate with an alert that
                // arrives after the client's side of the handshake, often on the connection's
                // own read).
                Err(unsent) => match ended.await {
                    Ok(e) if crate::upstream::tls_failure(&e).is_some() => Err(SendError::Connect(Box::new(e))),
                    _ => Err(unsent.into_error()),
                },
            },
            Fresh::H2(mut h2) => send_h2(&mut h2, req, &uri).await.map_err(Unsent::into_error),
        }
    }

    /// Tries the shared HTTP/2 connection, then idle HTTP/1.1 ones, most recent first; a connection
    /// that turns out to be closed before the request left hands it back for the next one.
    /// `Unsent::Back`: none could take it.
    async fn send_reused(self: &Arc<Self>, mut req: Outgoing, uri: &Uri) -> Result<Response<PooledBody>, Unsent> {
        if let Some(mut h2) = self.h2() {
            match send_h2(&mut h2, req, uri).await {
                Err(Unsent::Back(r, _)) => {
                    self.lock().h2.take_if(|cur| cur.is_closed());
                    req = r;
                }
                done => return done,
            }
        }
        while let Some(mut h1) = self.take_idle() {
            if h1.ready().await.is_err() {
                continue; // closed while idle
            }
            match self.send_h1(h1, req, uri).await {
                Err(Unsent::Back(r, _)) => req = r,
                done => return done,
            }
        }
        Err(Unsent::Back(req, None))
    }

    /// The dialling gate, for an HTTPS backend not yet seen answering HTTP/1.1 (plain HTTP never
    /// negotiates h2).
    async fn h2_gate(&self, uri: &Uri) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let may = || self.may_offer_h2.load(Ordering::Relaxed);
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) || !may() {
            return None;
        }
        // A dial that takes longer than this (a backend stalling its TLS handshake) is not waited
        // for: the next call dials on its own rather than queue behind it.
        let gate = tokio::time::timeout(H2_DIAL_WAIT, self.dialling.lock()).await.ok()?;
        may().then_some(gate)
    }

    fn h2(&self) -> Option<Sender2> {
        let mut idle = self.lock();
        match &idle.h2 {
            Some(h2) if h2.is_closed() => {
                idle.h2 = None;
                None
            }
            other => other.clone(),
        }
    }

    /// The most recently used idle HTTP/1.1 connection, dropping those idle too long.
    fn take_idle(&self) -> Option<Sender1> {
        let mut idle = self.lock();
        self.expire(&mut idle);
        idle.h1.pop_back().map(|(s, _)| s)
    }

    /// Closes the connections idle longer than `pool_idle_timeout` and forgets those the backend
    /// closed, so a backend that is no longer called does not keep sockets open. Called every
    /// second on each worker (`server::worker_tick`).
    pub fn prune(&self) {
        let mut idle = self.lock();
        self.expire(&mut idle);
        idle.h1.retain(|(s, _)| !s.is_closed());
        idle.h2.take_if(|h2| h2.is_closed());
    }

    /// Drops the idle HTTP/1.1 connections past `pool_idle_timeout` (the oldest are at the front).
    fn expire(&self, idle: &mut Idle) {
        let now = Instant::now();
        while let Some((_, since)) = idle.h1.front() {
            if now.duration_since(*since) < self.timeouts.idle {
                break;
            }
            idle.h1.pop_front();
        }
    }

    /// Keeps `h1` for the next request (its response has been read to the end).
    fn put(&self, h1: Sender1) {
        if h1.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.h1.len() >= MAX_IDLE {
            idle.h1.pop_front();
        }
        idle.h1.push_back((h1, Instant::now()));
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut h1: Sender1,
        mut req: Outgoing,
        uri: &Uri,
    ) -> Result<Response<PooledBody>, Unsent> {
        // HTTP/1.1 sends the origin form (path and query) and a Host header: `upstream::call` sets
        // it; a request handed back by a closing HTTP/2 connection lost it there (see `send_h2`).
        if !req.headers().contains_key(http::header::HOST) {
            if let Some(host) = uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        *req.uri_mut() = uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        match h1.try_send_request(*req).await {
            Ok(resp) => {
                let mut back = Some((h1, self.clone()));
                if resp.body().is_end_stream() {
                    if let Some((h1, pool)) = back.take() {
                        pool.put(h1);
                    }
                }
                Ok(resp.map(|inner| PooledBody { inner, back }))
            }
            Err(mut e) => match e.take_message() {
                Some(mut r) => {
                    *r.uri_mut() = uri.clone();
                    Err(Unsent::Back(Box::new(r), Some(e.into_error())))
                }
                None => Err(Unsent::Failed(e.into_error())),
            },
        }
    }

    /// A new connection within the connect timeout (TCP, TLS and the HTTP/2 handshake together):
    /// HTTP/2 when the backend chose it by ALPN (then shared by later requests), HTTP/1.1 otherwise.
    /// The connection's I/O is driven by a task on this worker's runtime.
    async fn connect(&self, uri: &Uri) -> Result<Fresh, SendError> {
        match tokio::time::timeout(self.timeouts.connect, self.dial(uri)).await {
            Ok(dialled) => dialled,
            Err(_) => Err(SendError::Connect(
                format!("no connection within the connect timeout ({:?})", self.timeouts.connect).into(),
            )),
        }
    }

    async fn dial(&self, uri: &Uri) -> Result<Fresh, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(SendError::Connect)?;
        let io = connector.call(uri.clone()).await.map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (h2, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "backend HTTP/2 connection ended with an error");
                }
            });
            self.opened[1].inc();
            self.lock().h2 = Some(h2.clone());
            Ok(Fresh::H2(h2))
        } else {
            self.may_offer_h2.store(false, Ordering::Relaxed);
            // A plain connection's task drives the TCP stream itself, not the TLS-or-plain enum
            // (whose every read and write first matches the variant): 0.4k fewer instructions a
            // request on a plain-HTTP backend, by callgrind.
            let (h1, ended) = match io {
                MaybeHttpsStream::Http(tcp) => drive_h1(tcp).await?,
                tls @ MaybeHttpsStream::Https(_) => drive_h1(tls).await?,
            };
            self.opened[0].inc();
            Ok(Fresh::H1(h1, ended))
        }
    }
}

/// An HTTP/1.1 handshake on `io`, and the task that drives the connection on this worker; the
/// receiver gets the error that ends the connection, if one does.
async fn drive_h1<T>(io: T) -> Result<(Sender1, tokio::sync::oneshot::Receiver<hyper::Error>), SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (h1, conn) = http1::handshake(io).await.map_err(|e| SendError::Connect(e.into()))?;
    let (tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            match crate::upstream::tls_failure(&e) {
                // Worth an operator's eye: a refused client certificate often shows only here.
                Some(tls) => tracing::warn!(error = %tls, "TLS with a backend failed on an open connection"),
                None => tracing::debug!(error = %e, "backend connection ended with an error"),
            }
            let _ = tx.send(e);
        }
    });
    Ok((h1, ended))
}

enum Fresh {
    /// With the receiver of the error that ends the connection, kept for its first request.
    H1(Sender1, tokio::sync::oneshot::Receiver<hyper::Error>),
    H2(Sender2),
}

/// A failed send: the request back (it never left; with the connection's error, if it had one), or
/// the exchange's error.
enum Unsent {
    Back(Outgoing, Option<hyper::Error>),
    Failed(hyper::Error),
}

impl Unsent {
    fn into_error(self) -> SendError {
        match self {
            Unsent::Failed(e) => SendError::Exchange(e),
            // A new connection that refuses its first request is as good as no connection. Its
            // error says why (e.g. a TLS 1.3 server's alert refusing the client certificate).
            Unsent::Back(_, Some(e)) => SendError::Connect(Box::new(e)),
            Unsent::Back(_, None) => SendError::Connect("the connection closed before the request was sent".into()),
        }
    }
}

async fn send_h2(h2: &mut Sender2, mut req: Outgoing, uri: &Uri) -> Result<Response<PooledBody>, Unsent> {
    // HTTP/2 carries scheme and authority as pseudo-headers, from the absolute URI.
    *req.uri_mut() = uri.clone();
    req.headers_mut().remove(http::header::HOST);
    match h2.try_send_request(*req).await {
        Ok(resp) => Ok(resp.map(|inner| PooledBody { inner, back: None })),
        Err(mut e) => match e.take_message() {
            Some(r) => Err(Unsent::Back(Box::new(r), Some(e.into_error()))),
            None => Err(Unsent::Failed(e.into_error())),
        },
    }
}

/// A backend response body; an HTTP/1.1 connection returns to its pool once this has been read
/// to the end, and closes if it is dropped before.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Sender1, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((h1, pool)) = self.back.take() {
            pool.put(h1);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
