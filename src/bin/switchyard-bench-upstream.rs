//! The benchmark's mock upstream: a deliberately fast hyper 1 HTTP/1.1 server (keep-alive,
//! `TCP_NODELAY`) that answers `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages`
//! (Anthropic) with a fixed small pre-rendered response, or, when the body asks for
//! `"stream": true`, an SSE stream of N content chunks in that dialect. It owns nothing else:
//! no JSON parsing, no per-request rendering, so direct runs measure the load generator, not it.
//!
//! Knobs (CLI flags, overridable per request by headers): `--chunks` / `x-mock-chunks`,
//! `--delay-ms` / `x-mock-delay-ms` (before the response head), `--chunk-delay-ms` /
//! `x-mock-chunk-delay-ms` (between stream chunks). Used by `bench/run.sh`.
//!
//! Fault injection is opt-in (`--faults`, used by `bench/soak.sh`; without it the upstream is the
//! plain fast one above): a random mix (`--faults 500=2,reset=1`, percent of requests) and/or one
//! fault per request named by `x-mock-fault: KIND` (optionally `KIND;models=a,b`: only when the
//! request's model is one of those). Kinds: `500`, `429`, `529` (error status with a body of the
//! dialect), `reset` (TCP RST before the response head), `reset_mid` (RST after half the body),
//! `stall` (silence of `--stall-ms` after half the body), `slow` (`--slow-ms` before the head),
//! `malformed` (a 200 whose JSON, or one stream event, is broken and carries `MOCK-MALFORMED`).
//! `GET /mock/faults` answers the counts injected so far.

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::mock::MockBody;

mod upstream_faults;
use upstream_faults::{Fault, FaultBody, FaultIo, Faults};

#[derive(Parser, Clone)]
#[command(about = "Fast mock OpenAI/Anthropic upstream for Switchyard's benchmark")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Content chunks in a streamed response.
    #[arg(long, default_value_t = 50)]
    chunks: u32,
    /// Delay before the response head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Delay between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Turns fault injection on: `none` (only `x-mock-fault` headers) or a random mix in percent
    /// of requests, e.g. `500=2,429=1,529=1,reset=1,reset_mid=1,stall=1,slow=1,malformed=1`.
    #[arg(long)]
    faults: Option<String>,
    /// How long a `stall` fault stays silent mid-body, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    stall_ms: u64,
    /// How long a `slow` fault waits before the response head, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    slow_ms: u64,
}

/// The pre-rendered wire bytes of both dialects.
struct Canned {
    openai_full: Bytes,
    openai_head: Vec<Bytes>,
    openai_chunk: Bytes,
    openai_tail: Vec<Bytes>,
    anthropic_full: Bytes,
    anthropic_head: Vec<Bytes>,
    anthropic_chunk: Bytes,
    anthropic_tail: Vec<Bytes>,
}

fn canned() -> Canned {
    let s = |v: &str| Bytes::from(v.to_owned());
    let oai = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
             \"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        ))
    };
    Canned {
        openai_full: s(concat!(
            r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","#,
            r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a benchmark reply."},"#,
            r#""finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":8,"total_tokens":108}}"#
        )),
        openai_head: vec![oai(r#"{"role":"assistant","content":""}"#, "null")],
        openai_chunk: oai(r#"{"content":"tok "}"#, "null"),
        openai_tail: vec![oai("{}", r#""stop""#), Bytes::from_static(b"data: [DONE]\n\n")],
        anthropic_full: s(concat!(
            r#"{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5","#,
            r#""content":[{"type":"text","text":"Hello! This is a benchmark reply."}],"stop_reason":"end_turn","#,
            r#""stop_sequence":null,"usage":{"input_tokens":100,"output_tokens":8}}"#
        )),
        anthropic_head: vec![
            s(concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",",
                "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],",
                "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n"
            )),
            s(concat!(
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,",
                "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
            )),
        ],
        anthropic_chunk: s(concat!(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n"
        )),
        anthropic_tail: vec![
            s("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"),
            s(concat!(
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",",
                "\"stop_sequence\":null},\"usage\":{\"output_tokens\":50}}\n\n"
            )),
            s("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ],
    }
}

/// True when the JSON body has `"stream": true` at any depth (good enough for the bench's bodies).
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut rest = body;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let after: Vec<u8> =
            rest.iter().copied().skip_while(|b| b.is_ascii_whitespace() || *b == b':').take(4).collect();
        if after == b"true" {
            return true;
        }
    }
    false
}

fn header_u64(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

fn reply<B>(status: StatusCode, content_type: &'static str, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The frames of a normal answer: one whole body, or head, `chunks` chunks and tail of a stream.
fn frames(canned: &Canned, anthropic: bool, stream: bool, chunks: u32) -> (Vec<Bytes>, &'static str) {
    if !stream {
        let full = if anthropic { canned.anthropic_full.clone() } else { canned.openai_full.clone() };
        return (vec![full], "application/json");
    }
    let (head, chunk, tail) = if anthropic {
        (&canned.anthropic_head, &canned.anthropic_chunk, &canned.anthropic_tail)
    } else {
        (&canned.openai_head, &canned.openai_chunk, &canned.openai_tail)
    };
    let mut frames = Vec::with_capacity(head.len() + chunks as usize + tail.len());
    frames.extend(head.iter().cloned());
    frames.extend(std::iter::repeat_n(chunk.clone(), chunks as usize));
    frames.extend(tail.iter().cloned());
    (frames, "text/event-stream")
}

/// What one request asked for.
struct Ask {
    anthropic: bool,
    chunks: u32,
    delay: u64,
    chunk_delay: Option<Duration>,
    fault_header: Option<String>,
    body: Bytes,
}

/// Reads the request; `Err` is the 404 for anything but the two LLM endpoints.
async fn ask(args: &Args, req: Request<Incoming>) -> Result<Ask, Response<MockBody>> {
    let anthropic = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => false,
        (&Method::POST, "/v1/messages") => true,
        _ => {
            let body = MockBody::new(vec![Bytes::from_static(b"{\"error\":\"not found\"}")], None);
            return Err(reply(StatusCode::NOT_FOUND, "application/json", body));
        }
    };
    let chunks =
        header_u64(&req, "x-mock-chunks").map_or(args.chunks, |n| u32::try_from(n.min(100_000)).unwrap_or(args.chunks));
    let delay = header_u64(&req, "x-mock-delay-ms").unwrap_or(args.delay_ms);
    let chunk_delay = header_u64(&req, "x-mock-chunk-delay-ms").unwrap_or(args.chunk_delay_ms);
    let fault_header = if args.faults.is_some() {
        req.headers().get("x-mock-fault").and_then(|v| v.to_str().ok()).map(str::to_owned)
    } else {
        None
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let chunk_delay = (chunk_delay > 0).then(|| Duration::from_millis(chunk_delay));
    Ok(Ask { anthropic, chunks, delay, chunk_delay, fault_header, body })
}

async fn handle(args: Arc<Args>, canned: Arc<Canned>, req: Request<Incoming>) -> Response<MockBody> {
    let ask = match ask(&args, req).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    if ask.delay > 0 {
        tokio::time::sleep(Duration::from_millis(ask.delay)).await;
    }
    let stream = wants_stream(&ask.body);
    let (frames, content_type) = frames(&canned, ask.anthropic, stream, ask.chunks);
    reply(StatusCode::OK, content_type, MockBody::new(frames, if stream { ask.chunk_delay } else { None }))
}

/// `handle` with fault injection: `Err` resets the connection before the response head.
async fn handle_faulty(
    args: Arc<Args>,
    canned: Arc<Canned>,
    faults: Arc<Faults>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<FaultBody>, std::io::Error> {
    if req.method() == Method::GET && req.uri().path() == "/mock/faults" {
        let body = MockBody::new(vec![faults.stats()], None);
        return Ok(reply(StatusCode::OK, "application/json", FaultBody::plain(body)));
    }
    let ask = match ask(&args, req).await {
        Ok(a) => a,
        Err(resp) => return Ok(resp.map(FaultBody::plain)),
    };
    if ask.delay > 0 {
        tokio::time::sleep(Duration::from_millis(ask.delay)).await;
    }
    let stream = wants_stream(&ask.body);
    let fault = faults.pick(ask.fault_header.as_deref(), &ask.body);
    let delay = if stream { ask.chunk_delay } else { None };
    let (mut frames, content_type) = frames(&canned, ask.anthropic, stream, ask.chunks);
    // Mid-body faults cut after the head and half the chunks, or half the bytes of a whole body.
    let split = |mut frames: Vec<Bytes>| -> (Vec<Bytes>, Vec<Bytes>) {
        if frames.len() == 1 {
            let whole = frames.remove(0);
            let half = whole.len() / 2;
            return (vec![whole.slice(..half)], vec![whole.slice(half..)]);
        }
        let rest = frames.split_off(frames.len() / 2);
        (frames, rest)
    };
    let body = match fault {
        None => FaultBody::plain(MockBody::new(frames, delay)),
        Some(f @ (Fault::Status500 | Fault::Status429 | Fault::Status529)) => {
            let status = f.status().unwrap_or(500);
            let body = MockBody::new(vec![upstream_faults::error_body(ask.anthropic, status)], None);
            let mut resp = reply(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "application/json",
                FaultBody::plain(body),
            );
            if status != 500 {
                resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return Ok(resp);
        }
        Some(Fault::Reset) => {
            reset.store(true, Ordering::Release);
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock upstream: injected reset"));
        }
        Some(Fault::Slow) => {
            tokio::time::sleep(faults.slow).await;
            FaultBody::plain(MockBody::new(frames, delay))
        }
        Some(Fault::ResetMid) => FaultBody::reset_after(MockBody::new(split(frames).0, delay), reset),
        Some(Fault::Stall) => {
            let (first, rest) = split(frames);
            FaultBody::stall_after(MockBody::new(first, delay), faults.stall, MockBody::new(rest, delay))
        }
        Some(Fault::Malformed) => {
            let bad = upstream_faults::malformed(ask.anthropic, stream);
            if stream {
                frames.insert(frames.len() / 2, bad);
            } else {
                frames = vec![bad];
            }
            FaultBody::plain(MockBody::new(frames, delay))
        }
    };
    Ok(reply(StatusCode::OK, content_type, body))
}

async fn serve(args: Arc<Args>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let canned = Arc::new(canned());
    let faults = match &args.faults {
        Some(spec) => Some(Arc::new(
            Faults::parse(spec, Duration::from_millis(args.stall_ms), Duration::from_millis(args.slow_ms))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--faults: {e}")))?,
        )),
        None => None,
    };
    eprintln!(
        "switchyard-bench-upstream listening on {}{}",
        listener.local_addr()?,
        if faults.is_some() { " (fault injection on)" } else { "" }
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (args, canned) = (args.clone(), canned.clone());
        if let Some(faults) = faults.clone() {
            tokio::spawn(serve_faulty(args, canned, faults, stream));
            continue;
        }
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (args, canned) = (args.clone(), canned.clone());
                async move { Ok::<_, Infallible>(handle(args, canned, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One connection with fault injection; a reset fault closes it with a TCP RST.
async fn serve_faulty(args: Arc<Args>, canned: Arc<Canned>, faults: Arc<Faults>, stream: tokio::net::TcpStream) {
    let io = FaultIo::new(stream);
    let reset = io.reset.clone();
    let svc = service_fn(move |req| handle_faulty(args.clone(), canned.clone(), faults.clone(), reset.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), svc).await;
}

fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wants_stream;

    #[test]
    fn stream_true_is_found_with_or_without_spaces() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{"model":"m", "stream" : true}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
    }
}
