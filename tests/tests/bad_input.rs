//! What strangers send: each bad input gets a clear error (and, for framing
//! errors, a closed connection), while a bystander connection keeps working
//! and keeps its data, and the server allocates nothing ahead of the bytes.

use std::io::Write;
use std::time::Duration;

use ringcache_tests::reply::*;
use ringcache_tests::{Raw, Server, rss_kb};

/// A connection that must survive everything the test does to others.
struct Bystander(Raw);

impl Bystander {
    fn new(s: &Server) -> Self {
        let mut raw = s.raw();
        assert_eq!(raw.cmd(&["SET", "precious", "value"]), ok());
        Bystander(raw)
    }
    fn check(&mut self) {
        assert_eq!(self.0.cmd(&["PING"]), simple("PONG"));
        assert_eq!(self.0.cmd(&["GET", "precious"]), bulk("value"));
    }
}

/// Sends `input` on a fresh connection and expects exactly `error` and a
/// closed connection.
fn protocol_error(s: &Server, input: &[u8], error: &str) {
    let mut c = s.raw();
    c.send(input);
    assert_eq!(c.read(), err(error), "input {:?}", String::from_utf8_lossy(&input[..input.len().min(40)]));
    assert!(c.is_closed(), "connection left open after {error}");
}

#[test]
fn framing_errors_close_only_that_connection() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    let cases: &[(&[u8], &str)] = &[
        (b"*-5\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*99999999999\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-7\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$4294967296\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*2\r\n$3\r\nGET\r\n$10\r\nabc\r\n*1\r\n$4\r\nPING\r\n",
            "ERR Protocol error: expected CRLF after bulk string",
        ),
        (b"*1\r\nxyz\r\n", "ERR Protocol error: expected '$', got 'x'"),
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"SET \"unbalanced\r\n", "ERR Protocol error: unbalanced quotes in request"),
    ];
    for (input, error) in cases {
        protocol_error(&s, input, error);
        by.check();
    }
}

#[test]
fn huge_announced_lengths_allocate_nothing() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    let before = rss_kb(s.pid());
    // Within the limits, but with none of the bytes sent: the server must
    // wait for them, not reserve them.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = s.raw();
        c.send(b"*1048576\r\n$536870912\r\nabc");
        clients.push(c);
    }
    by.check();
    let after = rss_kb(s.pid());
    assert!(after < before + 32 * 1024, "RSS grew from {before} kB to {after} kB");
}

#[test]
fn binary_garbage_is_an_unknown_command_not_a_crash() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    let mut c = s.raw();
    c.send(b"\x00\x01\x02\xff\xfe garbage\r\n");
    match c.read() {
        ringcache_protocol::Frame::Error(e) => {
            assert!(e.starts_with(b"ERR unknown command '"), "{}", String::from_utf8_lossy(&e))
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // A command error keeps the connection.
    assert_eq!(c.cmd(&["PING"]), simple("PONG"));
    by.check();
}

#[test]
fn inline_line_over_the_limit() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    protocol_error(&s, &vec![b'a'; 70 * 1024], "ERR Protocol error: too big inline request");
    let mut header = b"*".to_vec();
    header.extend(vec![b'1'; 70 * 1024]);
    protocol_error(&s, &header, "ERR Protocol error: too big mbulk count string");
    by.check();
}

#[test]
fn inline_commands_typed_by_hand() {
    let s = Server::start(&[]);
    let mut c = s.raw();
    c.send(b"PING\r\nSET greeting \"hello world\"\r\nGET greeting\nECHO 'it\\'s'\r\n\r\n");
    assert_eq!(c.read(), simple("PONG"));
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("hello world"));
    assert_eq!(c.read(), bulk("it's"));
}

#[test]
fn ten_thousand_pipelined_commands_in_one_write() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    let mut c = s.raw();
    let mut wire = Vec::new();
    for i in 0..10_000 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        write!(wire, "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()).unwrap();
    }
    for i in 0..10_000 {
        let k = format!("k{i}");
        write!(wire, "*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).unwrap();
    }
    c.send(&wire);
    for _ in 0..10_000 {
        assert_eq!(c.read(), ok());
    }
    for i in 0..10_000 {
        assert_eq!(c.read(), bulk(&format!("v{i}")));
    }
    assert_eq!(c.cmd(&["DBSIZE"]), int(10_001));
    by.check();
}

#[test]
fn half_a_frame_then_a_stall_blocks_nobody() {
    let s = Server::start(&["--timeout", "1"]);
    let mut by = Bystander::new(&s);
    let mut staller = s.raw();
    staller.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva");
    // Others are served while it stalls.
    for _ in 0..100 {
        by.check();
    }
    // The half-sent SET never happened.
    assert_eq!(by.0.cmd(&["EXISTS", "k"]), int(0));
    // The idle timeout closes the stalled connection.
    staller.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(staller.is_closed(), "stalled client was not closed by the idle timeout");
    by.0.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
}

#[test]
fn unterminated_frame_then_disconnect() {
    let s = Server::start(&[]);
    let mut by = Bystander::new(&s);
    for input in [&b"*2\r\n$3\r\nGET"[..], b"*1\r\n$4\r\nPI", b"*", b"$", b"SET k v"] {
        let mut c = s.raw();
        c.send(input);
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(c.is_closed());
        by.check();
    }
}

#[test]
fn query_buffer_limit_closes_the_connection() {
    let s = Server::start(&["--client-query-buffer-limit", "1mb", "--proto-max-bulk-len", "8mb"]);
    let mut by = Bystander::new(&s);
    let mut c = s.raw();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4000000\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut closed_early = false;
    for _ in 0..40 {
        if c.stream.write_all(&chunk).is_err() {
            closed_early = true;
            break;
        }
    }
    if !closed_early {
        assert_eq!(c.read(), err("ERR Protocol error: query buffer limit (client-query-buffer-limit) exceeded"));
    }
    assert!(c.is_closed());
    by.check();
}

#[test]
fn bulk_over_proto_max_bulk_len() {
    let s = Server::start(&["--proto-max-bulk-len", "1mb"]);
    protocol_error(&s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n", "ERR Protocol error: invalid bulk length");
    let mut c = s.raw();
    let value = vec![b'v'; 1024 * 1024];
    assert_eq!(c.cmd(&[&b"SET"[..], b"big", &value]), ok());
    assert_eq!(c.cmd(&["STRLEN", "big"]), int(1024 * 1024));
}

#[test]
fn maxclients_refuses_extra_connections() {
    let s = Server::start(&["--maxclients", "2"]);
    let mut a = s.raw();
    let mut b = s.raw();
    assert_eq!(a.cmd(&["PING"]), simple("PONG"));
    assert_eq!(b.cmd(&["PING"]), simple("PONG"));
    let mut c = s.raw();
    assert_eq!(c.read(), err("ERR max number of clients reached"));
    assert!(c.is_closed());
    drop(b);
    // The slot frees once the server notices the close.
    Server::eventually("a free client slot", || {
        let mut d = s.raw();
        d.send(b"*1\r\n$4\r\nPING\r\n");
        d.read() == simple("PONG")
    });
    assert_eq!(a.cmd(&["PING"]), simple("PONG"));
}

#[test]
fn unauthenticated_clients_get_small_limits() {
    let s = Server::start(&["--requirepass", "secret"]);
    protocol_error(&s, b"*11\r\n", "ERR Protocol error: unauthenticated multibulk length");
    protocol_error(&s, b"*2\r\n$4\r\nAUTH\r\n$20000\r\n", "ERR Protocol error: unauthenticated bulk length");
    let mut c = s.raw();
    assert_eq!(c.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    assert_eq!(c.cmd(&["AUTH", "wrong"]), err("WRONGPASS invalid username-password pair or user is disabled."));
    assert_eq!(c.cmd(&["AUTH", "secret"]), ok());
    assert_eq!(c.cmd(&["GET", "k"]), null());
}

/// One write mixing everything that changes how the rest of a pipeline is
/// handled: AUTH, inline requests, RESET (drops authentication), batches
/// longer than the server collects at once, and QUIT (nothing after it runs).
#[test]
fn pipeline_order_across_auth_reset_inline_and_quit() {
    let s = Server::start(&["--requirepass", "pw"]);
    let mut c = s.raw();
    let mut wire = Vec::new();
    let cmd = |w: &mut Vec<u8>, args: &[&str]| {
        write!(w, "*{}\r\n", args.len()).unwrap();
        for a in args {
            write!(w, "${}\r\n{a}\r\n", a.len()).unwrap();
        }
    };
    cmd(&mut wire, &["GET", "a"]);
    cmd(&mut wire, &["AUTH", "pw"]);
    cmd(&mut wire, &["SET", "a", "1"]);
    wire.extend_from_slice(b"GET a\r\n");
    cmd(&mut wire, &["GET", "a"]);
    cmd(&mut wire, &["RESET"]);
    cmd(&mut wire, &["GET", "a"]);
    cmd(&mut wire, &["AUTH", "pw"]);
    for _ in 0..150 {
        cmd(&mut wire, &["INCR", "n"]);
    }
    cmd(&mut wire, &["QUIT"]);
    cmd(&mut wire, &["SET", "after-quit", "x"]);
    c.send(&wire);
    assert_eq!(c.read(), err("NOAUTH Authentication required."));
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("1"));
    assert_eq!(c.read(), bulk("1"));
    assert_eq!(c.read(), simple("RESET"));
    assert_eq!(c.read(), err("NOAUTH Authentication required."));
    assert_eq!(c.read(), ok());
    for i in 1..=150 {
        assert_eq!(c.read(), int(i));
    }
    assert_eq!(c.read(), ok());
    assert!(c.is_closed());
    let mut d = s.raw();
    assert_eq!(d.cmd(&["AUTH", "pw"]), ok());
    assert_eq!(d.cmd(&["EXISTS", "after-quit"]), int(0));
    assert_eq!(d.cmd(&["GET", "n"]), bulk("150"));
}

/// RESET drops authentication; a request sent after it in the same write is
/// parsed with the unauthenticated limits, as Redis does.
#[test]
fn reset_in_a_pipeline_restores_unauthenticated_limits() {
    let s = Server::start(&["--requirepass", "pw"]);
    let mut c = s.raw();
    assert_eq!(c.cmd(&["AUTH", "pw"]), ok());
    let mut wire = b"*1\r\n$5\r\nRESET\r\n*21\r\n$4\r\nMSET\r\n".to_vec();
    for i in 0..10 {
        write!(wire, "$2\r\nk{i}\r\n$1\r\nv\r\n").unwrap();
    }
    c.send(&wire);
    assert_eq!(c.read(), simple("RESET"));
    assert_eq!(c.read(), err("ERR Protocol error: unauthenticated multibulk length"));
    assert!(c.is_closed());
}

/// Clearing the password at run time lets connections that never
/// authenticated run commands (the default user has no password any more).
#[test]
fn clearing_requirepass_frees_waiting_connections() {
    let s = Server::start(&["--requirepass", "pw"]);
    let mut waiting = s.raw();
    assert_eq!(waiting.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    let mut admin = s.raw();
    assert_eq!(admin.cmd(&["AUTH", "pw"]), ok());
    assert_eq!(admin.cmd(&["CONFIG", "SET", "requirepass", ""]), ok());
    assert_eq!(waiting.cmd(&["GET", "k"]), null());
}
