//! The admin HTTP endpoint: `/metrics` (Prometheus/OpenMetrics text),
//! `/health` (the process answers), `/ready` (it accepts clients),
//! `/cluster` (JSON view of members and slot ranges).
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per
//! connection, request head bounded to 8 KiB and 5 s, at most
//! `CONNS_MAX` connections at once. Scrapers and probes need nothing more,
//! and it saves a web framework's dependency tree.
//!
//! Access: it listens on `--admin-bind` (loopback by default). With
//! `--admin-token`, every endpoint wants `Authorization: Bearer TOKEN`;
//! without it `/health` and `/ready` still answer their status code (with
//! no detail, for probes) and everything else is 401. No endpoint reads or
//! writes keys.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use crate::cluster::lifecycle::Phase;
use crate::metrics;
use crate::shared::Shared;

const HEAD_MAX: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const CONNS_MAX: usize = 64;

pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNS_MAX));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                // Past the bound, a connection waits here (the kernel's
                // backlog holds the rest).
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, handle(&shared, stream)).await;
                    drop(slot);
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
    let authorized = match &shared.config.admin_token {
        None => true,
        Some(token) => bearer(&head).is_some_and(|t| crate::cluster::replication::proof_eq(t, token.as_bytes())),
    };
    if !authorized {
        shared.metrics.admin_unauthorized.fetch_add(1, Relaxed);
        // Probes still learn the status, and nothing else.
        return match path {
            "/health" => respond(&mut stream, 200, "text/plain", b"").await,
            "/ready" => respond(&mut stream, if ready(shared).is_ok() { 200 } else { 503 }, "text/plain", b"").await,
            _ => respond(&mut stream, 401, "text/plain", b"admin token required (Authorization: Bearer ...)\n").await,
        };
    }
    match path {
        "/metrics" => {
            let body = metrics::render(shared);
            respond(&mut stream, 200, "application/openmetrics-text; version=1.0.0; charset=utf-8", body.as_bytes())
                .await
        }
        "/health" => respond(&mut stream, 200, "text/plain", b"ok\n").await,
        "/ready" => match ready(shared) {
            Ok(()) => respond(&mut stream, 200, "text/plain", b"ready\n").await,
            Err(why) => respond(&mut stream, 503, "text/plain", why.as_bytes()).await,
        },
        "/cluster" => respond(&mut stream, 200, "application/json", cluster_json(shared).as_bytes()).await,
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    }
}

/// Whether the node should get traffic; why not otherwise.
fn ready(shared: &Shared) -> Result<(), &'static str> {
    if shared.lifecycle.phase() >= Phase::Draining {
        return Err("shutting down\n");
    }
    match shared.join_state() {
        "awaiting-seed" => Err("joining: no seed has answered yet\n"),
        "alone" => Err("running alone: no seed answered within the join timeout; serving this node's keys only\n"),
        _ => Ok(()),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header in `head`.
fn bearer(head: &[u8]) -> Option<&[u8]> {
    head.split(|&c| c == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&c| c == b':')?;
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let value = value[1..].trim_ascii();
        let (scheme, token) = value.split_at(value.iter().position(|&c| c == b' ')?);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii())
    })
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
        401 => "Unauthorized",
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
