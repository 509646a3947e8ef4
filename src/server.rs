//! The listener: accepts connections (`TCP_NODELAY`, HTTP/1.1 and HTTP/2 via the hyper-util auto
//! builder; TLS terminated with rustls when `[server.tls]` is set), dispatches each request by path,
//! stamps an `x-request-id` on every response, and shuts down gracefully (stop accepting, let in-flight responses finish up to the grace deadline).

use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::metrics::Metrics;
use crate::proxy::{self, full, X_REQUEST_ID};
use crate::record::RequestContext;
use crate::relay::{BoxError, ResponseBody};
use crate::state::AppState;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running gateway: its address and the handle that stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub state: Arc<AppState>,
}

/// Binds `addr` and serves `state` until `shutdown` is cancelled: one accept loop on the caller's
/// runtime (worker 0) and, for `[server] workers` above one, one more on each extra worker thread,
/// each a single-threaded runtime with its own backend pools. Every loop accepts on the same
/// listening socket; the loop that accepts a connection keeps it unless another worker serves fewer
/// connections, and then hands it over (`Balance`). An HTTP/1.1 connection's requests run on the
/// worker serving it, and so do the backend connections they use. The streams of an HTTP/2
/// connection are spread over all workers (`Spread`), so one multiplexed caller (a proxy in front)
/// is not held to one core.
pub async fn start(state: Arc<AppState>, addr: &str, shutdown: CancellationToken) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let tls = tls_acceptor(&state, &shutdown).map_err(std::io::Error::other)?;
    let connections = Arc::new(tokio::sync::Semaphore::new(state.config.server.max_connections));
    let workers = state.config.server.workers.max(1);
    let runtimes = (1..workers)
        .map(|_| tokio::runtime::Builder::new_current_thread().enable_all().build())
        .collect::<std::io::Result<Vec<_>>>()?;
    let exec = Spread {
        handles: std::iter::once(tokio::runtime::Handle::current())
            .chain(runtimes.iter().map(|r| r.handle().clone()))
            .collect(),
        next: Arc::default(),
    };
    // Worker runtimes outlive every accept loop: an HTTP/2 stream may run on a worker whose own
    // connections are all closed while its connection's loop is still in its grace period.
    let release = CancellationToken::new();
    let mut lanes = Balance::lanes(workers, &state.metrics);
    let lane0 = lanes.remove(0);
    let listener = listener.into_std()?;
    let mut finished = Vec::with_capacity(workers - 1);
    let started = lanes.into_iter().zip(runtimes).try_for_each(|(lane, runtime)| {
        let listener = listener.try_clone()?;
        let worker = Worker { lane, runtime, listener, exec: exec.clone(), release: release.clone() };
        finished.push(worker.spawn(&state, &tls, &connections, &shutdown)?);
        Ok(())
    });
    let listener = started.and_then(|()| TcpListener::from_std(listener)).inspect_err(|_| {
        // The workers already started stop with the failed start.
        shutdown.cancel();
        release.cancel();
    })?;
    let task = tokio::spawn({
        let (state, shutdown) = (state.clone(), shutdown.clone());
        async move {
            serve(state, listener, tls, exec, connections, lane0, shutdown).await;
            for done in finished {
                let _ = done.await;
            }
            release.cancel();
        }
    });
    Ok(Running { addr, shutdown, task, state })
}

/// Runs futures (HTTP/2 streams) on the workers' runtimes in turn.
#[derive(Clone)]
pub struct Spread {
    handles: Arc<[tokio::runtime::Handle]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl<F> hyper::rt::Executor<F> for Spread
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(fut);
    }
}

/// Spreads caller connections over the workers: the loop that accepts a connection keeps it when it
/// serves no more connections than any other worker, and otherwise hands it to the worker serving
/// the fewest (a handover costs two `epoll_ctl` calls, once per connection). Without it, a burst of
/// new connections (a load balancer's, a load generator's) lands on whichever loop wakes first,
/// which drains the whole accept queue: measured with `oha -c 64`, every connection on one worker,
/// and the gateway held to one core while the other idled.
pub struct Balance {
    /// Connections each worker serves (the `switchyard_client_connections` gauge, by worker).
    open: Vec<prometheus::IntGauge>,
    inboxes: Vec<tokio::sync::mpsc::UnboundedSender<Handover>>,
}

/// One worker's side of the `Balance`: its index and the connections handed to it.
pub struct Lane {
    index: usize,
    balance: Arc<Balance>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handover>,
}

/// A connection accepted by one loop for another worker to serve.
pub struct Handover {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    seat: Seat,
}

/// A connection's seat: what it holds until it closes, its place under `[server] max_connections`
/// and its count on the worker serving it (named apart from `record::Slot`, a request's place under
/// an in-flight limit).
pub struct Seat {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Balance {
    /// The lanes of `workers` workers sharing one balance, in worker order.
    fn lanes(workers: usize, metrics: &Metrics) -> Vec<Lane> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| tokio::sync::mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|i| metrics.client_connections.with_label_values(&[&i.to_string()])).collect();
        let balance = Arc::new(Balance { open, inboxes });
        receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Lane { index, balance: balance.clone(), inbox })
            .collect()
    }

    /// The worker that serves a connection accepted by worker `me`, counted on it at once (so a
    /// burst accepted by one loop is spread as it is accepted).
    fn choose(&self, me: usize, permit: tokio::sync::OwnedSemaphorePermit) -> (usize, Seat) {
        let mine = self.open[me].get();
        let target = match self.open.iter().enumerate().min_by_key(|(_, g)| g.get()) {
            Some((least, g)) if g.get() < mine => least,
            _ => me,
        };
        let open = self.open[target].clone();
        open.inc();
        (target, Seat { _permit: permit, open })
    }

    /// Places a connection accepted by worker `me`: `Some` when `me` serves it, `None` when it
    /// was handed over (or lost on the way, which is logged). A worker that has stopped gets
    /// none: `me` serves it.
    fn place(
        &self,
        me: usize,
        stream: TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<(TcpStream, SocketAddr, Seat)> {
        let (target, seat) = self.choose(me, permit);
        if target == me {
            return Some((stream, peer, seat));
        }
        let stream =
            stream.into_std().inspect_err(|e| tracing::debug!(error = %e, "could not hand a connection over")).ok()?;
        let tokio::sync::mpsc::error::SendError(back) =
            self.inboxes[target].send(Handover { stream, peer, seat }).err()?;
        TcpStream::from_std(back.stream).ok().map(|stream| (stream, back.peer, back.seat))
    }
}

/// An extra worker thread, before it starts.
struct Worker {
    lane: Lane,
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    exec: Spread,
    release: CancellationToken,
}

impl Worker {
    /// Starts the thread: its accept loop on the shared listener. The receiver resolves when the
    /// loop has shut down (its grace period included); the runtime stays up until `release`.
    fn spawn(
        self,
        state: &Arc<AppState>,
        tls: &Option<tokio_rustls::TlsAcceptor>,
        connections: &Arc<tokio::sync::Semaphore>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (state, tls, connections, shutdown) = (state.clone(), tls.clone(), connections.clone(), shutdown.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        let Worker { lane, runtime, listener, exec, release } = self;
        let index = lane.index;
        std::thread::Builder::new().name(format!("switchyard-worker-{index}")).spawn(move || {
            crate::upstream::set_worker(index);
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(state, listener, tls, exec, connections, lane, shutdown).await,
                    Err(e) => tracing::error!(worker = index, error = %e, "worker cannot accept; the others go on"),
                }
                let _ = done.send(());
                release.cancelled().await;
            });
        })?;
        Ok(finished)
    }
}

/// One accept loop; with `tls`, every connection's TLS is terminated first. `connections` is shared
/// by all loops (`[server] max_connections`); `exec` runs HTTP/2 streams.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    exec: Spread,
    connections: Arc<tokio::sync::Semaphore>,
    lane: Lane,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let limits = &state.config.server;
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder.http2().max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let _tick = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(worker_tick(state.clone())));
    let Lane { index, balance, mut inbox } = lane;
    loop {
        let (stream, peer, seat) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(handed) = inbox.recv() => match TcpStream::from_std(handed.stream) {
                Ok(stream) => (stream, handed.peer, handed.seat),
                Err(e) => {
                    tracing::debug!(error = %e, "a connection handed over by another worker was lost");
                    continue;
                }
            },
            accepted = accept(&listener, &connections) => {
                let Some((stream, peer, permit)) = accepted else { break };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "set_nodelay failed");
                }
                match balance.place(index, stream, peer, permit) {
                    Some(mine) => mine,
                    None => continue,
                }
            }
        };
        let (state, builder, watcher) = (state.clone(), builder.clone(), graceful.watcher());
        match &tls {
            None => {
                tokio::spawn(serve_connection(state, builder, watcher, stream, peer, seat));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                // The handshake runs in the connection's own task, under the header read timeout
                // (a client that opens a socket and says nothing is cut off like a slowloris).
                tokio::spawn(async move {
                    let timeout = state.config.server.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve_connection(state, builder, watcher, tls_stream, peer, seat).await,
                        Ok(Err(e)) => {
                            state.metrics.tls_handshake_errors.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            state.metrics.tls_handshake_errors.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    // Connections handed over from now on are served by the loop that accepted them.
    drop(inbox);
    drop(listener);
    let grace = state.config.server.shutdown_grace;
    tracing::info!(in_flight_connections = graceful.count(), ?grace, "shutting down");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Once a second on each worker: closes this worker's backend connections idle past their
/// `pool_idle_timeout` (`Pool::prune`). The tick also keeps a timer due within a second armed on
/// the runtime: tokio wakes its own event loop (a write to an eventfd: one system call) whenever a
/// new timer is due before every armed one, and with only the long request timers armed (first byte
/// 120 s, idle 60 s) each keep-alive request's 30 s header-read timer was, so every request paid
/// that write. Measured with `strace -c`: 7 → 6 system calls per request with one in flight.
async fn worker_tick(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for backend in &state.backends {
            if let Some(pool) = crate::upstream::pool_for_this_worker(&backend.pools) {
                pool.prune();
            }
        }
    }
}

/// With `[server.tls]`: the acceptor, and the task that reloads the certificate when its files change.
fn tls_acceptor(
    state: &Arc<AppState>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio_rustls::TlsAcceptor>, rustls::Error> {
    let Some(cfg) = &state.config.server.tls else { return Ok(None) };
    let resolver = crate::tls::Resolver::new(cfg.key.clone());
    let config = crate::tls::server_config(resolver.clone())?;
    tokio::spawn(crate::tls::watch(
        resolver,
        cfg.cert_file.clone(),
        cfg.key_file.clone(),
        cfg.reload_interval,
        state.metrics.tls_reloads.clone(),
        shutdown.clone(),
    ));
    Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
}

/// The next connection, under `[server] max_connections`: at the limit, new connections wait in the
/// kernel's accept queue. `None` once the limit is closed.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<tokio::sync::Semaphore>,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = connections.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return Some((stream, peer, permit)),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by preface, or by ALPN under TLS) on one accepted connection.
async fn serve_connection<I>(
    state: Arc<AppState>,
    builder: Arc<auto::Builder<Spread>>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    peer: SocketAddr,
    seat: Seat,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(dispatch(state, req, Some(peer)).await) }
    });
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
    let _seat = seat;
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

/// Routes one request by method and path, and stamps its request id. `peer`: the caller's address,
/// for the admin API's audit line (handed down, not put into the request's extensions: that map is
/// three allocations a request for its one reader).
pub async fn dispatch<B>(state: Arc<AppState>, req: Request<B>, peer: Option<SocketAddr>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let request_id = request_id(&req);
    let header_id = HeaderValue::from_str(&request_id).ok();
    let path = match req.uri().path() {
        CHAT_COMPLETIONS => Cow::Borrowed(CHAT_COMPLETIONS),
        MESSAGES => Cow::Borrowed(MESSAGES),
        other => Cow::Owned(other.to_owned()),
    };
    let is_messages = path == MESSAGES;
    let ctx = RequestContext::new(state.clone(), request_id, req.method().clone(), path);
    let mut resp = match (req.method(), req.uri().path()) {
        (_, CHAT_COMPLETIONS) => proxy::admit(state, req, Dialect::OpenAi, ctx).await,
        (_, MESSAGES) => proxy::admit(state, req, Dialect::Anthropic, ctx).await,
        (&Method::GET, "/v1/models") => json(StatusCode::OK, state.models_body.clone(), ctx),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", ctx),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n", ctx)
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: no flag definitions loaded yet\n", ctx)
            }
        }
        (&Method::GET, "/metrics") => metrics(&state.metrics, ctx),
        (&Method::GET, "/dashboard") => {
            let mut resp = text(StatusCode::OK, crate::dashboard::PAGE, ctx);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            resp
        }
        (&Method::GET, "/dashboard/data") => {
            json(StatusCode::OK, Bytes::from(crate::dashboard::data(&state).to_string()), ctx)
        }
        (_, "/v1/feedback") => feedback(&state, req, ctx).await,
        (_, "/webhooks/posthog") => posthog_webhook(&state, &req, ctx),
        (_, path) if path.starts_with("/admin/") => {
            let mut ctx = ctx;
            let resp = crate::admin::handle(&state, req, peer).await;
            ctx.status = resp.status().as_u16();
            resp
        }
        (_, path) => {
            let dialect =
                if req.headers().contains_key("anthropic-version") { Dialect::Anthropic } else { Dialect::OpenAi };
            let err = GatewayError::new(ErrorKind::NotFound, format!("no endpoint {} {path}", req.method()));
            let mut ctx = ctx;
            ctx.error = Some(err.kind);
            ctx.status = err.status();
            proxy::error_response(&err, dialect, ctx)
        }
    };
    if let Some(id) = header_id {
        // Anthropic's SDK reads `request-id`; a same-dialect Anthropic backend's own id is kept.
        if is_messages && !resp.headers().contains_key("request-id") {
            resp.headers_mut().insert(http::header::HeaderName::from_static("request-id"), id.clone());
        }
        resp.headers_mut().insert(X_REQUEST_ID, id);
    }
    resp
}

/// The caller's `x-request-id` when it is a sane token, else a fresh one.
fn request_id<B>(req: &Request<B>) -> String {
    if let Some(id) = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
            return id.to_owned();
        }
    }
    // 32 lowercase hex digits, as `format!("{:032x}")` writes them, without the formatting machinery.
    let mut n = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    String::from_utf8(digits.to_vec()).unwrap_or_default()
}

fn text(status: StatusCode, body: &'static str, mut ctx: RequestContext) -> Response<ResponseBody> {
    ctx.status = status.as_u16();
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json(status: StatusCode, body: Bytes, mut ctx: RequestContext) -> Response<ResponseBody> {
    ctx.status = status.as_u16();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn metrics(m: &Metrics, mut ctx: RequestContext) -> Response<ResponseBody> {
    ctx.status = 200;
    let mut resp = Response::new(full(m.render()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `POST /v1/feedback`.
async fn feedback<B>(state: &AppState, req: Request<B>, mut ctx: RequestContext) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let result = async {
        if req.method() != Method::POST {
            return Err(GatewayError::new(ErrorKind::MethodNotAllowed, "use POST /v1/feedback"));
        }
        let body = http_body_util::Limited::new(req.into_body(), 16 * 1024)
            .collect()
            .await
            .map_err(|e| GatewayError::new(ErrorKind::InvalidRequest, format!("cannot read the body: {e}")))?
            .to_bytes();
        crate::feedback::submit(&state.feedback, &state.metrics, &body)
    }
    .await;
    match result {
        Ok(v) => json(StatusCode::OK, Bytes::from(v.to_string()), ctx),
        Err(err) => {
            ctx.error = Some(err.kind);
            ctx.status = err.status();
            proxy::error_response(&err, crate::feedback::DIALECT, ctx)
        }
    }
}

/// `POST /webhooks/posthog`: PostHog (an action's webhook, or any automation) says flags changed; the
/// poller fetches the definitions now instead of at its next tick. Authenticated by a shared secret
/// (`Authorization: Bearer <secret>`), compared in constant time; off unless configured.
fn posthog_webhook<B>(state: &AppState, req: &Request<B>, mut ctx: RequestContext) -> Response<ResponseBody> {
    let secret = state.config.posthog_keys.as_ref().and_then(|k| k.webhook_secret.as_ref());
    let err = match secret {
        None => Some(GatewayError::new(
            ErrorKind::NotFound,
            "the PostHog webhook is off: set [flags.posthog] webhook_secret_env",
        )),
        Some(_) if req.method() != Method::POST => Some(GatewayError::new(ErrorKind::MethodNotAllowed, "use POST")),
        Some(s) if !crate::admin::bearer_matches(req.headers(), s) => {
            Some(GatewayError::new(ErrorKind::Unauthorized, "missing or wrong webhook secret"))
        }
        Some(_) => None,
    };
    if let Some(err) = err {
        ctx.error = Some(err.kind);
        ctx.status = err.status();
        return proxy::error_response(&err, Dialect::OpenAi, ctx);
    }
    state.posthog_wake.notify_one();
    tracing::info!("PostHog webhook: polling flag definitions now");
    json(StatusCode::ACCEPTED, Bytes::from_static(b"{\"status\":\"polling\"}"), ctx)
}
