//! The admin HTTP endpoint: `/metrics` (Prometheus/OpenMetrics text),
//! `/health` (the process answers), `/ready` (it accepts clients),
//! `/cluster` (JSON view of members and slot ranges).
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per
//! connection, request head bounded to 8 KiB and 5 s. Scrapers and probes
//! need nothing more, and it saves a web framework's dependency tree.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use crate::metrics;
use crate::shared::Shared;

const HEAD_MAX: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, handle(&shared, stream)).await;
                });
            }
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(shared: &Arc<Shared>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HEAD_MAX {
            return respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
        }
    }
    let line = head.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let body = metrics::render(shared);
            respond(&mut stream, 200, "application/openmetrics-text; version=1.0.0; charset=utf-8", body.as_bytes())
                .await
        }
        "/health" => respond(&mut stream, 200, "text/plain", b"ok\n").await,
        "/ready" => {
            if shared.shutdown_requested.load(Relaxed) {
                respond(&mut stream, 503, "text/plain", b"shutting down\n").await
            } else if shared.awaiting_seed.load(Relaxed) {
                respond(&mut stream, 503, "text/plain", b"joining: no seed has answered yet\n").await
            } else {
                respond(&mut stream, 200, "text/plain", b"ready\n").await
            }
        }
        "/cluster" => respond(&mut stream, 200, "application/json", cluster_json(shared).as_bytes()).await,
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The cluster as this node sees it: epoch, members (with their addresses
/// and the slot ranges they are primary for) and this node's name.
fn cluster_json(shared: &Shared) -> String {
    let t = shared.topology();
    let mut members = Vec::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let ranges: Vec<String> =
            t.primary_ranges(i as u16).iter().map(|(a, b)| format!("{{\"start\":{a},\"end\":{b}}}")).collect();
        members.push(format!(
            "{{\"name\":{},\"id\":{},\"client_addr\":{},\"cluster_port\":{},\"weight\":{},\"state\":\"alive\",\"primary_slots\":[{}]}}",
            json_str(&n.name),
            json_str(&n.id),
            json_str(&n.client_addr.to_string()),
            n.cluster_port,
            n.weight,
            ranges.join(",")
        ));
    }
    format!(
        "{{\"node\":{},\"cluster\":{},\"epoch\":{},\"replicas\":{},\"members\":[{}]}}\n",
        json_str(&t.myself().name),
        json_str(&shared.config.cluster_name),
        t.table.epoch,
        t.table.replicas(),
        members.join(",")
    )
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
