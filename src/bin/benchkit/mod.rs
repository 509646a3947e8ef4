//! What the benchmark and soak clients share (included with `mod benchkit;`; a folder without
//! `main.rs`, so Cargo does not take it for a binary): raw hyper 1 HTTP/1.1 connections with
//! `TCP_NODELAY`, a prepared request template, `/proc` readings (RSS, open descriptors) and the
//! one JSON line on stdout each tool ends with.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A prepared request template: URI, `host` and headers computed once, the body given per request.
pub struct Target {
    pub uri: Uri,
    pub authority: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    /// A template for POSTs of JSON to `url`, with extra `"name: value"` headers.
    pub fn new(url: &Uri, headers: &[String]) -> Result<Self, Error> {
        let authority = url.authority().ok_or("the URL needs a host and port")?.to_string();
        let mut parsed = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        for h in headers {
            let (name, value) = h.split_once(':').ok_or("a header is \"name: value\"")?;
            parsed.push((HeaderName::from_bytes(name.trim().as_bytes())?, HeaderValue::from_str(value.trim())?));
        }
        let uri = url.path_and_query().map_or("/", |p| p.as_str()).parse()?;
        Ok(Target { uri, authority, headers: parsed })
    }

    /// A POST of `body` with the template's headers.
    pub fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, Error> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(HOST, &self.authority)
            .body(Full::new(body))?;
        for (n, v) in &self.headers {
            req.headers_mut().insert(n.clone(), v.clone());
        }
        Ok(req)
    }
}

/// A fresh HTTP/1.1 keep-alive connection to `authority` (`host:port`), `TCP_NODELAY` on.
pub async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// VmRSS and VmHWM of a process, in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open file descriptors of a process (0 when unreadable).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[expect(clippy::print_stdout, reason = "the JSON result line on stdout is this tool's output")]
pub fn print_line(v: &serde_json::Value) {
    println!("{v}");
}

/// A client connection of either HTTP version (HTTP/2 in cleartext, prior knowledge).
pub enum Conn {
    H1(SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// A fresh connection to `authority`: HTTP/2 when `h2`, else HTTP/1.1 keep-alive.
    pub async fn open(authority: &str, h2: bool) -> Result<Conn, Error> {
        if !h2 {
            return Ok(Conn::H1(connect(authority).await?));
        }
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    }

    /// Sends one request once the connection can take it; the response with its body unread.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<http::Response<hyper::body::Incoming>, Error> {
        match self {
            Conn::H1(s) => {
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
            Conn::H2(s) => {
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}
