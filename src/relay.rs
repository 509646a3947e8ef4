//! The response body the caller reads: frames are relayed as they arrive (never buffered), under the
//! backend's idle-between-chunks and total deadlines, optionally rewritten by a stream transform
//! (dialect translation), with a failure after the first byte turned into a well-formed error event of
//! the caller's dialect, and an event stream that ends before its finish (or that a translator ended
//! with an error) counted as the backend's fault, with an error event when the relay must add one.
//! It owns the `RequestContext`, so the request is recorded when the body ends or when the client
//! goes away (which drops the upstream body and so cancels the upstream request).

use crate::error::{Dialect, GatewayError, UpstreamFault};
use crate::record::RequestContext;
use crate::usage::StreamEnd;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the gateway sends.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Rewrites a stream chunk by chunk (e.g. Anthropic events into OpenAI chunks).
pub trait Transform: Send {
    /// Bytes to send for one upstream chunk (possibly empty).
    fn chunk(&mut self, data: &[u8]) -> Bytes;
    /// `chunk` for an owned chunk, which a transform may pass on as is instead of copying it.
    fn chunk_owned(&mut self, data: Bytes) -> Bytes {
        self.chunk(&data)
    }
    /// Bytes to send after the upstream ended cleanly.
    fn finish(&mut self) -> Bytes;
    /// The fault for which the transform ended the stream with an error event of its own, if it did.
    fn failure(&self) -> Option<UpstreamFault> {
        None
    }
}

/// Reads token usage on the side of the relayed (upstream) bytes.
pub enum UsageObserver {
    /// An event stream of this dialect.
    Stream(crate::usage::UsageTap),
    /// A whole JSON body of this dialect, kept up to `MAX_OBSERVED_BODY`.
    Whole(Dialect, bytes::BytesMut),
}

/// Whole bodies larger than this are relayed without reading their usage.
const MAX_OBSERVED_BODY: usize = 4 * 1024 * 1024;

impl UsageObserver {
    pub fn new(dialect: Dialect, stream: bool) -> Self {
        if stream {
            UsageObserver::Stream(crate::usage::UsageTap::new(dialect))
        } else {
            UsageObserver::Whole(dialect, bytes::BytesMut::new())
        }
    }

    fn observe(&mut self, data: &[u8]) {
        match self {
            UsageObserver::Stream(t) => t.observe(data),
            UsageObserver::Whole(_, buf) if buf.len() + data.len() <= MAX_OBSERVED_BODY => buf.extend_from_slice(data),
            UsageObserver::Whole(..) => {}
        }
    }

    /// How far an observed event stream got.
    fn stream_end(&self) -> Option<StreamEnd> {
        match self {
            UsageObserver::Stream(t) => Some(t.end()),
            UsageObserver::Whole(..) => None,
        }
    }

    fn usage(&self) -> Option<crate::usage::Usage> {
        match self {
            UsageObserver::Stream(t) => t.usage(),
            UsageObserver::Whole(d, buf) => crate::usage::Usage::from_response(*d, buf),
        }
    }
}

/// Most bytes sent in one frame when several chunks arrived at once.
const MAX_BATCH: usize = 64 * 1024;
/// Turns of the event loop a batch gives the backend connection to hand over chunks it has
/// already read (two: measured on hyper 1.12's client; one coalesced nothing).
const COALESCE_TURNS: u8 = 2;

/// Chunks collected in one poll: the first is kept as is, later ones are appended to a copy.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Option<bytes::BytesMut>,
}

impl Batch {
    fn push(&mut self, b: Bytes) {
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(b),
            (Some(_), Some(m)) => m.extend_from_slice(&b),
            (Some(f), None) => {
                let mut m = bytes::BytesMut::with_capacity(f.len() + b.len() * 4);
                m.extend_from_slice(f);
                m.extend_from_slice(&b);
                self.more = Some(m);
            }
        }
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or_else(|| self.first.as_ref().map_or(0, Bytes::len), bytes::BytesMut::len)
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The batch as a data frame, or `otherwise` when it is empty.
    fn ready_or(
        self,
        otherwise: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match (self.more, self.first) {
            (Some(m), _) => Poll::Ready(Some(Ok(Frame::data(m.freeze())))),
            (None, Some(f)) => Poll::Ready(Some(Ok(Frame::data(f)))),
            (None, None) => otherwise,
        }
    }
}

pub struct RelayBody<B> {
    /// An upstream failure seen while a batch was being sent; reported on the next poll.
    pending_error: Option<GatewayError>,
    pending_trailers: Option<Frame<Bytes>>,
    usage: Option<UsageObserver>,
    inner: Pin<Box<B>>,
    ctx: RequestContext,
    idle: Duration,
    /// The timers are made the first time the body waits for the backend: a whole body that is
    /// there at once (most replies) never needs them.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// When the last chunk arrived; the idle timer fires at `last_activity + idle`.
    last_activity: Instant,
    deadline_at: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    /// `Some`: the caller reads an event stream of this dialect, so failures become an error event.
    sse: Option<Dialect>,
    transform: Option<Box<dyn Transform>>,
    /// A same-dialect event stream: one that ends before its finish gets an error event.
    check_end: bool,
    done: bool,
    /// Chunks taken but not yet sent, while the backend connection gets its turns (see `poll_frame`).
    held: Batch,
    /// Turns given since the last chunk arrived.
    turns_given: u8,
    /// Something was sent already (the first bytes never wait).
    sent_any: bool,
}

impl<B> RelayBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(
        inner: B,
        ctx: RequestContext,
        idle: Duration,
        total: Duration,
        sse: Option<Dialect>,
        transform: Option<Box<dyn Transform>>,
        usage: Option<UsageObserver>,
    ) -> Self {
        let mut ctx = ctx;
        ctx.relaying = true;
        let deadline = tokio::time::Instant::from_std(ctx.start) + total;
        RelayBody {
            pending_error: None,
            pending_trailers: None,
            usage,
            inner: Box::pin(inner),
            ctx,
            idle,
            idle_timer: None,
            last_activity: Instant::now(),
            deadline_at: deadline,
            deadline: None,
            sse,
            transform,
            check_end: false,
            done: false,
            held: Batch::default(),
            turns_given: 0,
            sent_any: false,
        }
    }

    /// Checks that a relayed (same-dialect) event stream reaches its finish (a usage observer of the
    /// stream's dialect tells); one that ends cleanly before it gets an error event.
    pub fn checking_stream_end(mut self) -> Self {
        self.check_end = true;
        self
    }

    /// Marks the body ended: the context stops counting it as in flight and learns its usage.
    fn end(&mut self) {
        self.done = true;
        self.ctx.relaying = false;
        if let Some(u) = &self.usage {
            self.ctx.usage = u.usage();
        }
    }

    /// The upstream body ended cleanly: the transform's tail, then the verdict on the stream. A
    /// translator may have ended it with an error event of its own; a relayed stream that never
    /// reached its finish gets one here, so no client takes a cut stream for a whole answer.
    fn finish(&mut self, batch: &mut Batch) {
        if let Some(t) = &mut self.transform {
            let tail = t.finish();
            if !tail.is_empty() {
                self.ctx.first_byte();
                batch.push(tail);
            }
        }
        let translated = self.transform.as_ref().and_then(|t| t.failure());
        let observed = if self.check_end { self.usage.as_ref().and_then(UsageObserver::stream_end) } else { None };
        self.end();
        let (fault, event) = match (translated, observed) {
            (Some(fault), _) => (fault, false),
            (None, Some(StreamEnd::Open)) => (UpstreamFault::Truncated, true),
            (None, Some(StreamEnd::Error)) => (UpstreamFault::StreamError, false),
            _ => return,
        };
        let message = match fault {
            UpstreamFault::Truncated => "the backend's stream ended before its finish",
            UpstreamFault::MalformedSse => "the backend's stream could not be read",
            _ => "the backend reported an error in the stream",
        };
        let err = GatewayError::upstream(fault, message);
        tracing::warn!(request_id = %self.ctx.request_id, error = %err.message, "stream ended with an error");
        self.ctx.error = Some(err.kind);
        self.ctx.fault = err.fault;
        if let (true, Some(d)) = (event, self.sse) {
            batch.push(err.stream_event(d));
        }
    }

    /// Ends the body after a failure: an error event for streams, a broken body otherwise.
    fn fail(&mut self, err: GatewayError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.end();
        self.ctx.error = Some(err.kind);
        self.ctx.fault = err.fault;
        tracing::warn!(request_id = %self.ctx.request_id, error = %err.message, "response broke off");
        match self.sse {
            Some(d) => Poll::Ready(Some(Ok(Frame::data(err.stream_event(d))))),
            None => Poll::Ready(Some(Err(Box::new(err)))),
        }
    }
}

impl<B> Body for RelayBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Chunks that have already arrived are sent together (one write instead of one per chunk).
        // hyper's client hands a response over one chunk at a time (its body channel holds one, and
        // the next chunk it has already read takes it two turns of the event loop), so after the
        // first bytes a batch gives the backend connection's task `COALESCE_TURNS` turns to hand
        // over what it has; nothing waits for the network: turns that bring nothing send what there is.
        let mut batch = std::mem::take(&mut this.held);
        loop {
            if let Some(err) = this.pending_error.take() {
                return this.fail(err);
            }
            if let Some(trailers) = this.pending_trailers.take() {
                return Poll::Ready(Some(Ok(trailers)));
            }
            if this.done {
                return batch.ready_or(Poll::Ready(None));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.turns_given = 0;
                    // The idle timer is moved only when it fires (see below): no timer-wheel work per chunk.
                    this.last_activity = Instant::now();
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers (LLM APIs send none): passed on after what is batched.
                        Err(other) if batch.is_empty() => return Poll::Ready(Some(Ok(other))),
                        Err(other) => {
                            this.pending_trailers = Some(other);
                            return batch.ready_or(Poll::Pending);
                        }
                    };
                    if let Some(u) = &mut this.usage {
                        u.observe(&data);
                    }
                    let out = match &mut this.transform {
                        Some(t) => t.chunk_owned(data),
                        None => data,
                    };
                    if !out.is_empty() {
                        this.ctx.first_byte();
                        batch.push(out);
                    }
                    if this.transform.is_none() && this.inner.is_end_stream() {
                        // A body of known length: the caller may never poll for the end.
                        this.finish(&mut batch);
                        return batch.ready_or(Poll::Ready(None));
                    }
                    if batch.len() >= MAX_BATCH {
                        this.sent_any = true;
                        return batch.ready_or(Poll::Pending);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    tracing::debug!(error = %e, "upstream body error");
                    let err = GatewayError::upstream(UpstreamFault::Reset, "the backend's response broke off");
                    if batch.is_empty() {
                        return this.fail(err);
                    }
                    this.pending_error = Some(err);
                    return batch.ready_or(Poll::Pending);
                }
                Poll::Ready(None) => {
                    this.finish(&mut batch);
                    return batch.ready_or(Poll::Ready(None));
                }
                Poll::Pending => {
                    if !batch.is_empty() {
                        if this.sent_any && this.turns_given < COALESCE_TURNS {
                            this.turns_given += 1;
                            this.held = batch;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        this.sent_any = true;
                        return batch.ready_or(Poll::Pending);
                    }
                    let at = this.deadline_at;
                    let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        return this.fail(GatewayError::upstream(
                            UpstreamFault::TimeoutTotal,
                            "the backend's response exceeded the total timeout",
                        ));
                    }
                    let due = this.last_activity + this.idle;
                    let idle_timer = this.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    while idle_timer.as_mut().poll(cx).is_ready() {
                        let due = this.last_activity + this.idle;
                        if Instant::now() >= due {
                            let msg = format!("the backend sent nothing for {:?}", this.idle);
                            return this.fail(GatewayError::upstream(UpstreamFault::Stall, msg));
                        }
                        idle_timer.as_mut().reset(due);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.transform.is_some() || self.sse.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
