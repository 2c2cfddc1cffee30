//! The HTTP side of `--metrics`: one thread, a `TcpListener`, `GET /metrics` and nothing else.
//!
//! A metrics endpoint sees one scrape every few seconds, so connections are served one at a time, each closed
//! after its response. What a client can cost is bounded: the request head must arrive within
//! [`CLIENT_TIMEOUT`] and fit in [`MAX_HEAD`] bytes, and the response must be taken within the same timeout, so
//! a slow or stuck client delays the next scrape by at most a few seconds and never hangs the thread. The
//! accept loop waits in `poll(2)` with a short timeout, which lets it notice shutdown within
//! [`POLL_INTERVAL_MS`].

use std::io::{self, Read, Write};
use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prometheus_client::registry::Registry;
use ringwatch_core::Shutdown;

use super::collect;

/// How long a client may take to send its request head, and again to take the response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long the accept loop waits before looking at the shutdown flag again.
const POLL_INTERVAL_MS: u16 = 100;

/// Serves `registry` on `listener` from a new thread until `shutdown`.
pub(super) fn spawn(listener: TcpListener, registry: Registry, shutdown: Shutdown) -> io::Result<()> {
    // Non-blocking, so that a connection reset between poll and accept cannot block the loop.
    listener.set_nonblocking(true)?;
    thread::Builder::new().name("metrics".into()).spawn(move || serve(&listener, &registry, &shutdown))?;
    Ok(())
}

fn serve(listener: &TcpListener, registry: &Registry, shutdown: &Shutdown) {
    while !shutdown.is_triggered() {
        match readable(listener) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: poll failed");
                shutdown.sleep(Duration::from_millis(POLL_INTERVAL_MS.into()));
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, registry) {
                    tracing::debug!(%peer, error = %e, "metrics: request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning on a listener that stays readable.
                tracing::warn!(error = %e, "metrics: accept failed");
                shutdown.sleep(Duration::from_millis(POLL_INTERVAL_MS.into()));
            }
        }
    }
}

/// Waits up to [`POLL_INTERVAL_MS`] for a pending connection.
fn readable(listener: &TcpListener) -> nix::Result<bool> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    Ok(poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS))? > 0)
}

/// Reads one request, writes one response, closes.
fn handle(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let response = match read_head(&mut stream)? {
        Some(head) => respond(&head, registry),
        None => Response::text(400, "Bad Request", "bad request\n"),
    };
    stream.write_all(&response.to_bytes())?;
    stream.shutdown(NetShutdown::Write)
}

/// The request line and headers, up to the blank line; `None` when they are too long or the client closed early.
/// Fails with `TimedOut`/`WouldBlock` when the head does not arrive within [`CLIENT_TIMEOUT`].
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !has_blank_line(&head) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(head))
}

fn has_blank_line(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// `GET /metrics` (a query string is ignored) gets the exposition; any other request a 404.
fn respond(head: &[u8], registry: &Registry) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" || path != "/metrics" {
        return Response::text(404, "Not Found", "not found: metrics are at GET /metrics\n");
    }
    match collect::encode(registry) {
        Ok(body) => Response { status: 200, reason: "OK", content_type: collect::CONTENT_TYPE, body },
        Err(_) => Response::text(500, "Internal Server Error", "encoding the metrics failed\n"),
    }
}

/// A complete response; every connection gets exactly one, then `Connection: close`.
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Response { status, reason, content_type: "text/plain; charset=utf-8", body: body.to_owned() }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        [head.as_bytes(), self.body.as_bytes()].concat()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringwatch_policy::Policy;

    use super::super::MetricsInputs;
    use super::super::events::EventCounts;
    use super::*;

    fn server() -> (String, Shutdown) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let inputs = MetricsInputs {
            pipeline: Arc::default(),
            policy: Arc::new(Policy::observe_only()),
            store: None,
            forward: None,
        };
        let shutdown = Shutdown::new();
        spawn(listener, collect::registry(inputs, EventCounts::default()), shutdown.clone()).expect("spawn");
        (addr, shutdown)
    }

    fn exchange(addr: &str, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(request).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    }

    #[test]
    fn get_metrics_is_served_and_everything_else_is_404() {
        let (addr, shutdown) = server();
        let ok = exchange(&addr, b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\r\n\r\n# HELP ringwatch_"), "{ok}");
        assert!(exchange(&addr, b"GET /metrics?x=1 HTTP/1.1\n\n").starts_with("HTTP/1.1 200 "));
        for other in
            [&b"GET / HTTP/1.0\r\n\r\n"[..], b"POST /metrics HTTP/1.0\r\n\r\n", b"GET /metricsx HTTP/1.0\r\n\r\n"]
        {
            let resp = exchange(&addr, other);
            assert!(resp.starts_with("HTTP/1.1 404 "), "{}: {resp}", String::from_utf8_lossy(other));
        }
        assert!(exchange(&addr, b"\r\n\r\n").starts_with("HTTP/1.1 400 "));
        shutdown.trigger();
    }

    #[test]
    fn a_slow_or_oversized_client_cannot_hold_the_server() {
        let (addr, shutdown) = server();
        let _silent = TcpStream::connect(&addr).expect("connect");
        let started = Instant::now();
        let ok = exchange(&addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        assert!(started.elapsed() < CLIENT_TIMEOUT * 2, "served after the silent client timed out");
        let huge = [b"GET /metrics HTTP/1.0\r\nX: ".as_slice(), &[b'a'; MAX_HEAD], b"\r\n\r\n"].concat();
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        // The server may close before reading all of it; only what comes back matters.
        let _ = stream.write_all(&huge);
        let mut resp = String::new();
        let _ = stream.read_to_string(&mut resp);
        assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 400 "), "{resp}");
        shutdown.trigger();
    }
}
