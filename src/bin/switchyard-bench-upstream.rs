//! The benchmark's mock upstream: a deliberately fast hyper 1 HTTP/1.1 server (keep-alive,
//! `TCP_NODELAY`) that answers `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages`
//! (Anthropic) with a fixed small pre-rendered response, or, when the body asks for
//! `"stream": true`, an SSE stream of N content chunks in that dialect. It owns nothing else:
//! no JSON parsing, no per-request rendering, so direct runs measure the load generator, not it.
//!
//! Knobs (CLI flags, overridable per request by headers): `--chunks` / `x-mock-chunks`,
//! `--delay-ms` / `x-mock-delay-ms` (before the response head), `--chunk-delay-ms` /
//! `x-mock-chunk-delay-ms` (between stream chunks). Used by `bench/run.sh`.

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
use std::sync::Arc;
use std::time::Duration;
use switchyard::mock::MockBody;

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

fn reply(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn handle(args: Arc<Args>, canned: Arc<Canned>, req: Request<Incoming>) -> Response<MockBody> {
    let whole = |b: Bytes| MockBody::new(vec![b], None);
    let anthropic = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => false,
        (&Method::POST, "/v1/messages") => true,
        _ => {
            let body = whole(Bytes::from_static(b"{\"error\":\"not found\"}"));
            return reply(StatusCode::NOT_FOUND, "application/json", body);
        }
    };
    let chunks =
        header_u64(&req, "x-mock-chunks").map_or(args.chunks, |n| u32::try_from(n.min(100_000)).unwrap_or(args.chunks));
    let delay = header_u64(&req, "x-mock-delay-ms").unwrap_or(args.delay_ms);
    let chunk_delay = header_u64(&req, "x-mock-chunk-delay-ms").unwrap_or(args.chunk_delay_ms);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if !wants_stream(&body) {
        let full = if anthropic { canned.anthropic_full.clone() } else { canned.openai_full.clone() };
        return reply(StatusCode::OK, "application/json", whole(full));
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
    let body = MockBody::new(frames, (chunk_delay > 0).then(|| Duration::from_millis(chunk_delay)));
    reply(StatusCode::OK, "text/event-stream", body)
}

async fn serve(args: Arc<Args>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let canned = Arc::new(canned());
    eprintln!("switchyard-bench-upstream listening on {}", listener.local_addr()?);
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
