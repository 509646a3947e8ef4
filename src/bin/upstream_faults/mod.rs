//! Fault injection for the benchmark upstream (`--faults`; see the header of
//! `switchyard-bench-upstream.rs`): which fault a request gets (its `x-mock-fault` header, else a
//! roll of the configured mix), the counts injected, the body that breaks off, stalls or resets
//! after its first part, and the connection wrapper that turns a close into a TCP RST.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use switchyard::mock::MockBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One kind of upstream fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status500,
    Status429,
    Status529,
    /// TCP RST before the response head.
    Reset,
    /// TCP RST after half the body.
    ResetMid,
    /// Silence after half the body, longer than a gateway's idle timeout.
    Stall,
    /// A wait before the response head, longer than a gateway's first-byte timeout.
    Slow,
    /// A 200 whose JSON body (or one stream event) is broken.
    Malformed,
}

pub const ALL: [Fault; 8] = [
    Fault::Status500,
    Fault::Status429,
    Fault::Status529,
    Fault::Reset,
    Fault::ResetMid,
    Fault::Stall,
    Fault::Slow,
    Fault::Malformed,
];

/// The marker every malformed body carries, so a client can tell relayed garbage from its own bugs.
pub const MALFORMED_MARKER: &str = "MOCK-MALFORMED";

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Status500 => "500",
            Fault::Status429 => "429",
            Fault::Status529 => "529",
            Fault::Reset => "reset",
            Fault::ResetMid => "reset_mid",
            Fault::Stall => "stall",
            Fault::Slow => "slow",
            Fault::Malformed => "malformed",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        ALL.iter().copied().find(|f| f.name() == s.trim())
    }

    /// The error status of a status fault.
    pub fn status(self) -> Option<u16> {
        match self {
            Fault::Status500 => Some(500),
            Fault::Status429 => Some(429),
            Fault::Status529 => Some(529),
            _ => None,
        }
    }
}

/// The configured mix and the counts injected so far.
pub struct Faults {
    mix: Vec<(Fault, f64)>,
    pub stall: Duration,
    pub slow: Duration,
    requests: AtomicU64,
    injected: [AtomicU64; ALL.len()],
}

impl Faults {
    /// `spec` is `none` or `kind=percent,...`.
    pub fn parse(spec: &str, stall: Duration, slow: Duration) -> Result<Faults, String> {
        let mut mix = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
            let (kind, pct) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected kind=percent"))?;
            let fault = Fault::parse(kind).ok_or_else(|| format!("{kind:?}: unknown fault kind"))?;
            let pct: f64 = pct.trim().parse().map_err(|_| format!("{pct:?}: not a percentage"))?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!("{part:?}: percentage out of 0..100"));
            }
            mix.push((fault, pct / 100.0));
        }
        if mix.iter().map(|m| m.1).sum::<f64>() > 1.0 {
            return Err("the fault percentages add up to more than 100".into());
        }
        Ok(Faults { mix, stall, slow, requests: AtomicU64::new(0), injected: Default::default() })
    }

    /// The fault for one request: the `x-mock-fault` header's (`KIND` or `KIND;models=a,b`), else
    /// a roll of the mix; counted.
    pub fn pick(&self, header: Option<&str>, body: &[u8]) -> Option<Fault> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fault = match header {
            Some(h) => {
                let (kind, scope) = h.split_once(';').unwrap_or((h, ""));
                let models = scope.trim().strip_prefix("models=");
                match models {
                    Some(list) if !list.split(',').any(|m| has_model(body, m.trim())) => None,
                    _ => Fault::parse(kind),
                }
            }
            None if self.mix.is_empty() => None,
            None => {
                let mut roll = fastrand::f64();
                self.mix.iter().find_map(|(f, p)| {
                    roll -= p;
                    (roll < 0.0).then_some(*f)
                })
            }
        };
        if let Some(f) = fault {
            self.injected[f as usize].fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    /// `{"requests": N, "injected": {"500": n, ...}}`.
    pub fn stats(&self) -> Bytes {
        let injected: serde_json::Map<String, serde_json::Value> = ALL
            .iter()
            .map(|f| (f.name().to_owned(), self.injected[*f as usize].load(Ordering::Relaxed).into()))
            .collect();
        let v = serde_json::json!({"requests": self.requests.load(Ordering::Relaxed), "injected": injected});
        Bytes::from(v.to_string())
    }
}

/// Whether the JSON body names `model` (compact or with one space, as clients and the gateway write it).
fn has_model(body: &[u8], model: &str) -> bool {
    let needles = [format!("\"model\":\"{model}\""), format!("\"model\": \"{model}\"")];
    needles.iter().any(|n| body.windows(n.len()).any(|w| w == n.as_bytes()))
}

/// The error body of a status fault, in the request's dialect.
pub fn error_body(anthropic: bool, status: u16) -> Bytes {
    let (oa_type, an_type) = match status {
        429 => ("rate_limit_error", "rate_limit_error"),
        529 => ("server_error", "overloaded_error"),
        _ => ("server_error", "api_error"),
    };
    let msg = format!("mock upstream: injected {status}");
    let v = if anthropic {
        serde_json::json!({"type": "error", "error": {"type": an_type, "message": msg}})
    } else {
        serde_json::json!({"error": {"message": msg, "type": oa_type, "param": null, "code": null}})
    };
    Bytes::from(v.to_string())
}

/// A whole JSON body cut off mid-object, or (streams) one broken event.
pub fn malformed(anthropic: bool, stream: bool) -> Bytes {
    let s = match (anthropic, stream) {
        (false, false) => {
            format!("{{\"id\":\"{MALFORMED_MARKER}\",\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,")
        }
        (true, false) => format!("{{\"id\":\"{MALFORMED_MARKER}\",\"type\":\"message\",\"content\":[{{\"type\":\"te"),
        (false, true) => format!("data: {{\"id\":\"{MALFORMED_MARKER}\",\"choices\":[{{\n\n"),
        (true, true) => {
            format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"{MALFORMED_MARKER}\n\n")
        }
    };
    Bytes::from(s)
}

/// A body that sends `first`, then resets the connection, or stalls and sends `rest`.
pub struct FaultBody {
    first: MockBody,
    reset: Option<Arc<AtomicBool>>,
    stall: Option<Duration>,
    rest: Option<MockBody>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FaultBody {
    /// A body without a fault.
    pub fn plain(body: MockBody) -> Self {
        FaultBody { first: body, reset: None, stall: None, rest: None, sleep: None }
    }

    /// `first`, then a TCP RST (through the connection's `reset` flag).
    pub fn reset_after(first: MockBody, reset: Arc<AtomicBool>) -> Self {
        FaultBody { reset: Some(reset), ..FaultBody::plain(first) }
    }

    /// `first`, then silence for `stall`, then `rest`.
    pub fn stall_after(first: MockBody, stall: Duration, rest: MockBody) -> Self {
        FaultBody { stall: Some(stall), rest: Some(rest), ..FaultBody::plain(first) }
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if let Some(sleep) = &mut self.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match Pin::new(&mut self.first).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => match e {},
                Poll::Ready(None) => {}
            }
            if let Some(flag) = self.reset.take() {
                flag.store(true, Ordering::Release);
                let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock upstream: injected reset");
                return Poll::Ready(Some(Err(e)));
            }
            if let Some(d) = self.stall.take() {
                self.sleep = Some(Box::pin(tokio::time::sleep(d)));
                continue;
            }
            return match &mut self.rest {
                Some(rest) => Pin::new(rest).poll_frame(cx).map_err(|e| match e {}),
                None => Poll::Ready(None),
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_end_stream()
            && self.reset.is_none()
            && self.stall.is_none()
            && self.sleep.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.reset.is_none() && self.stall.is_none() && self.rest.is_none() {
            self.first.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

/// A connection that is closed with a TCP RST (zero linger) instead of a FIN when its flag is set.
pub struct FaultIo {
    stream: tokio::net::TcpStream,
    pub reset: Arc<AtomicBool>,
}

impl FaultIo {
    pub fn new(stream: tokio::net::TcpStream) -> Self {
        FaultIo { stream, reset: Arc::new(AtomicBool::new(false)) }
    }
}

impl Drop for FaultIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for FaultIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_fault_scoped_to_models_applies_only_to_those_models() {
        let f = Faults::parse("none", Duration::ZERO, Duration::ZERO).unwrap_or_else(|e| unreachable!("{e}"));
        let body = br#"{"model":"gpt-4o-a","messages":[]}"#;
        assert_eq!(f.pick(Some("500;models=gpt-4o-a,x"), body), Some(Fault::Status500));
        assert_eq!(f.pick(Some("reset;models=other"), body), None);
        assert_eq!(f.pick(Some("stall"), body), Some(Fault::Stall));
        assert_eq!(f.pick(None, body), None);
    }

    #[test]
    fn a_mix_over_100_percent_is_refused() {
        assert!(Faults::parse("500=60,reset=50", Duration::ZERO, Duration::ZERO).is_err());
        assert!(Faults::parse("bogus=1", Duration::ZERO, Duration::ZERO).is_err());
    }
}
