//! The benchmark's "hyper floor": the smallest reverse proxy on Switchyard's own HTTP stack, to
//! tell what the stack costs from what Switchyard adds. It has Switchyard's shape and nothing else:
//! one current-thread tokio runtime per worker on a shared listener, hyper-util's auto (HTTP/1.1 and
//! HTTP/2) server with the same header-read timer, `TCP_NODELAY` on both sides, and per worker a
//! keep-alive pool of hyper HTTP/1.1 client connections to one upstream. Bodies stream through
//! untouched in both directions: no parsing, routing, metrics, logging or timeouts. Never a
//! gateway; `bench/run.sh` measures it beside nginx (`TARGETS=... floor`).

use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Clone)]
#[command(about = "A bare hyper reverse proxy: the floor of Switchyard's HTTP stack, for the benchmark")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: SocketAddr,
    /// The upstream's address (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads, each with its own runtime and pool (0: one per core, as Switchyard).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

thread_local! {
    /// This worker's upstream connections, idle or busy; a request takes the most recent ready one.
    static POOL: RefCell<Vec<http1::SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Option<http1::SendRequest<Incoming>> {
    POOL.with_borrow_mut(|senders| {
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().rposition(|s| s.is_ready())?;
        Some(senders.swap_remove(ready))
    })
}

async fn dial(upstream: SocketAddr) -> std::io::Result<http1::SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn proxy(upstream: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let sender = match take() {
        Some(s) => Ok(s),
        None => dial(upstream).await,
    };
    let answer = match sender {
        Ok(mut sender) => {
            let sent = sender.send_request(req).await;
            // Back at once: it is taken again when ready, i.e. once this response's body is read.
            POOL.with_borrow_mut(|senders| senders.push(sender));
            sent.map(|r| r.map(BodyExt::boxed_unsync)).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    Ok(answer.unwrap_or_else(|e| {
        let mut r =
            Response::new(Full::from(format!("upstream: {e}\n")).map_err(|never| match never {}).boxed_unsync());
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    }))
}

async fn worker(listener: TcpListener, upstream: SocketAddr) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let builder = std::sync::Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| proxy(upstream, req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let listener = match std::net::TcpListener::bind(args.listen).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard-bench-floor: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            eprintln!("switchyard-bench-floor listening on {addr}, upstream {}, {workers} workers", args.upstream)
        }
        Err(e) => {
            eprintln!("switchyard-bench-floor: {e}");
            return ExitCode::FAILURE;
        }
    }
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let listener = listener.try_clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener?)?;
                    worker(listener, args.upstream).await;
                    Ok(())
                })
            })
        })
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("switchyard-bench-floor: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
