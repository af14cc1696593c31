//! The node as a service and as a cache: real clients (the `redis` crate,
//! redis-cli), exact replies, TTLs, auth, configuration sources, admin HTTP,
//! and graceful shutdown.

use std::io::Write;
use std::process::{Command, Stdio};

use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Server, http_get};

#[test]
fn redis_crate_client_works() {
    let s = Server::start(&[]);
    let mut con = s.redis();
    let _: () = redis::cmd("SET").arg("greeting").arg("hello").query(&mut con).unwrap();
    let v: String = redis::cmd("GET").arg("greeting").query(&mut con).unwrap();
    assert_eq!(v, "hello");
    let n: i64 = redis::cmd("INCRBY").arg("counter").arg(41).query(&mut con).unwrap();
    assert_eq!(n, 41);
    let vals: Vec<Option<String>> = redis::cmd("MGET").arg("greeting").arg("missing").query(&mut con).unwrap();
    assert_eq!(vals, vec![Some("hello".to_string()), None]);
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 1002);
    let err = redis::cmd("INCR").arg("greeting").query::<i64>(&mut con).unwrap_err();
    assert!(err.to_string().contains("value is not an integer or out of range"), "{err}");
}

#[test]
fn resp3_replies() {
    let s = Server::start(&[]);
    let mut c = s.raw();
    match c.cmd(&["HELLO", "3"]) {
        Frame::Map(pairs) => {
            let get = |k: &str| pairs.iter().find(|(key, _)| *key == bulk(k)).map(|(_, v)| v.clone());
            assert_eq!(get("proto"), Some(int(3)));
            assert_eq!(get("mode"), Some(bulk("cluster")));
            assert_eq!(get("server"), Some(bulk("ringcache")));
        }
        other => panic!("HELLO 3 gave {other:?}"),
    }
    assert_eq!(c.cmd(&["GET", "nothing"]), Frame::Null);
    assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
    match c.cmd(&["CONFIG", "GET", "maxmemory-policy"]) {
        Frame::Map(pairs) => assert_eq!(pairs, vec![(bulk("maxmemory-policy"), bulk("noeviction"))]),
        other => panic!("CONFIG GET in RESP3 gave {other:?}"),
    }
    match c.cmd(&["INFO", "keyspace"]) {
        Frame::Verbatim { format, text } => {
            assert_eq!(&format, b"txt");
            assert!(String::from_utf8_lossy(&text).contains("db0:keys=1,expires=0"));
        }
        other => panic!("INFO in RESP3 gave {other:?}"),
    }
    assert_eq!(c.cmd(&["HELLO", "4"]), err("NOPROTO unsupported protocol version"));
    assert_eq!(c.cmd(&["RESET"]), simple("RESET"));
    assert_eq!(c.cmd(&["GET", "nothing"]), Frame::Null);
}

#[test]
fn ttl_lifecycle_without_wall_clock_sleeps() {
    let s = Server::start(&[]);
    let mut c = s.raw();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let far = now_ms + 3_600_000;
    assert_eq!(c.cmd(&["SET", "k", "v", "PXAT", &far.to_string()]), ok());
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]), int(far));
    // Redis rounds EXPIRETIME to the nearest second.
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]), int((far + 500) / 1000));
    match c.cmd(&["PTTL", "k"]) {
        Frame::Integer(n) => assert!(n > 3_500_000 && n <= 3_600_000, "{n}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.cmd(&["TTL", "missing"]), int(-2));
    assert_eq!(c.cmd(&["PERSIST", "k"]), int(1));
    assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
    // An expiry in the past deletes at once.
    assert_eq!(c.cmd(&["PEXPIREAT", "k", &(now_ms - 1000).to_string()]), int(1));
    assert_eq!(c.cmd(&["EXISTS", "k"]), int(0));
    // INCR keeps the TTL; SET without KEEPTTL drops it.
    assert_eq!(c.cmd(&["SET", "n", "1", "EX", "100"]), ok());
    assert_eq!(c.cmd(&["INCR", "n"]), int(2));
    assert_eq!(c.cmd(&["TTL", "n"]), int(100));
    assert_eq!(c.cmd(&["SET", "n", "5", "KEEPTTL"]), ok());
    assert_eq!(c.cmd(&["TTL", "n"]), int(100));
    assert_eq!(c.cmd(&["SET", "n", "5"]), ok());
    assert_eq!(c.cmd(&["TTL", "n"]), int(-1));
}

#[test]
fn short_ttls_expire_lazily_and_actively() {
    let s = Server::start(&[]);
    let mut c = s.raw();
    for i in 0..200 {
        assert_eq!(c.cmd(&["SET", &format!("t{i}"), "v", "PX", "20"]), ok());
    }
    assert_eq!(c.cmd(&["SET", "keep", "v"]), ok());
    // Nobody reads the keys: the active expiry cycle must remove them.
    Server::eventually("active expiry", || c.cmd(&["DBSIZE"]) == int(1));
    let Frame::Bulk(info) = c.cmd(&["INFO", "stats"]) else { panic!() };
    assert!(String::from_utf8_lossy(&info).contains("expired_keys:200"));
    // Lazy expiry: a read after the deadline finds nothing.
    assert_eq!(c.cmd(&["SET", "lazy", "v", "PX", "1"]), ok());
    Server::eventually("lazy expiry", || c.cmd(&["GET", "lazy"]) == null());
}

#[test]
fn redis_cli_and_pipe_mode() {
    let s = Server::start(&[]);
    let port = s.port().to_string();
    let cli = |args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &port]).args(args);
        let out = ringcache_tests::output_within(cmd, ringcache_tests::WAIT);
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "k", "v"]), "OK\n");
    assert_eq!(cli(&["get", "k"]), "v\n");
    assert_eq!(cli(&["ping"]), "PONG\n");
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        ringcache_tests::spawn_child(cmd).expect("redis-cli (Debian package redis-tools; scripts/test.sh installs it)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..5000 {
            write!(stdin, "SET pipe:{i} value{i}\r\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("errors: 0, replies: 5000"), "{text}");
    assert_eq!(cli(&["dbsize"]), "5001\n");
}

#[test]
fn requirepass_and_hello_auth() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    let mut c = s.raw();
    assert_eq!(c.cmd(&["PING"]), err("NOAUTH Authentication required."));
    assert_eq!(
        c.cmd(&["HELLO", "3"]),
        err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
        )
    );
    assert!(matches!(c.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]), Frame::Map(_)));
    assert_eq!(c.cmd(&["PING"]), simple("PONG"));
    let mut d = s.raw();
    assert_eq!(
        d.cmd(&["AUTH", "default", "nope"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(d.cmd(&["AUTH", "default", "s3cret"]), ok());
    // Changing the password at run time applies to new authentications.
    assert_eq!(d.cmd(&["CONFIG", "SET", "requirepass", "other"]), ok());
    let mut e = s.raw();
    assert_eq!(e.cmd(&["AUTH", "s3cret"]), err("WRONGPASS invalid username-password pair or user is disabled."));
    assert_eq!(e.cmd(&["AUTH", "other"]), ok());
}

#[test]
fn client_commands() {
    let s = Server::start(&[]);
    let mut a = s.raw();
    let mut b = s.raw();
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]), ok());
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]), bulk("alpha"));
    assert_eq!(
        a.cmd(&["CLIENT", "SETNAME", "has space"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    let Frame::Integer(b_id) = b.cmd(&["CLIENT", "ID"]) else { panic!() };
    let Frame::Bulk(list) = a.cmd(&["CLIENT", "LIST"]) else { panic!() };
    let list = String::from_utf8_lossy(&list).into_owned();
    assert!(list.contains("name=alpha"), "{list}");
    assert!(list.contains(&format!("id={b_id} ")), "{list}");
    assert_eq!(a.cmd(&["CLIENT", "KILL", "ID", &b_id.to_string()]), int(1));
    assert!(b.is_closed());
    assert_eq!(a.cmd(&["CLIENT", "KILL", "ID", "999999"]), int(0));
    assert_eq!(a.cmd(&["CLIENT", "NOPE"]), err("ERR unknown subcommand 'NOPE'. Try CLIENT HELP."));
    assert_eq!(a.cmd(&["CLIENT", "KILL"]), err("ERR wrong number of arguments for 'client|kill' command"));
}

#[test]
fn config_file_env_and_flags() {
    let dir = std::env::temp_dir().join(format!("ringcache-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, "maxmemory = \"64mb\"\nmaxmemory-policy = \"allkeys-lru\"\ntimeout = 300\n").unwrap();
    let path = file.to_str().unwrap();
    // File says allkeys-lru and 64mb; the environment overrides maxmemory;
    // a flag overrides the policy.
    let s = Server::start_with_env(
        &["--config", path, "--maxmemory-policy", "volatile-ttl"],
        &[("RINGCACHE_MAXMEMORY", "32mb")],
    );
    let mut c = s.raw();
    assert_eq!(c.cmd(&["CONFIG", "GET", "maxmemory"]), bulks(&["maxmemory", "33554432"]));
    assert_eq!(c.cmd(&["CONFIG", "GET", "maxmemory-policy"]), bulks(&["maxmemory-policy", "volatile-ttl"]));
    assert_eq!(c.cmd(&["CONFIG", "GET", "timeout"]), bulks(&["timeout", "300"]));
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "port", "1"]),
        err("ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config")
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]), ok());
    assert_eq!(c.cmd(&["CONFIG", "GET", "maxmemory-policy"]), bulks(&["maxmemory-policy", "allkeys-lfu"]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn json_logs() {
    let s = Server::start(&["--log-format", "json"]);
    assert!(s.log().lines().any(|l| l.starts_with('{') && l.contains("listening for clients")), "{}", s.log());
}

#[test]
fn admin_endpoints() {
    let s = Server::start(&["--admin-port", "0"]);
    let admin = s.admin.expect("admin address");
    let mut c = s.raw();
    assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));
    assert_eq!(c.cmd(&["GET", "missing"]), null());
    assert_eq!(c.cmd(&["GET"]), err("ERR wrong number of arguments for 'get' command"));
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "ringcache_commands_total{command=\"set\",result=\"ok\"} 1",
        "ringcache_commands_total{command=\"get\",result=\"ok\"} 2",
        "ringcache_commands_total{command=\"get\",result=\"rejected\"} 1",
        "ringcache_keyspace_hits_total 1",
        "ringcache_keyspace_misses_total 1",
        "ringcache_keys 1",
        "ringcache_connected_clients 1",
        "ringcache_used_memory_bytes ",
        "ringcache_evicted_keys_total 0",
        "ringcache_expired_keys_total 0",
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle:?}:\n{body}");
    }
    assert_eq!(http_get(admin, "/health"), (200, "ok\n".to_string()));
    assert_eq!(http_get(admin, "/ready").0, 200);
    let (status, cluster) = http_get(admin, "/cluster");
    assert_eq!(status, 200);
    assert!(cluster.contains("\"primary_slots\":[{\"start\":0,\"end\":16383}]"), "{cluster}");
    assert!(cluster.contains("\"epoch\":1"), "{cluster}");
    assert_eq!(http_get(admin, "/nope").0, 404);
}

#[test]
fn sigterm_finishes_replies_and_exits_zero() {
    let mut s = Server::start(&[]);
    let mut c = s.raw();
    let mut wire = Vec::new();
    for i in 0..2000 {
        write!(wire, "*3\r\n$3\r\nSET\r\n$5\r\nk{i:04}\r\n$1\r\nv\r\n").unwrap();
    }
    c.send(&wire);
    // Wait for the first reply: the server is inside the batch.
    assert_eq!(c.read(), ok());
    s.signal("TERM");
    for _ in 1..2000 {
        assert_eq!(c.read(), ok());
    }
    assert!(c.is_closed());
    assert!(s.wait().success(), "{}", s.log());
    s.wait_log("stopped");
}

#[test]
fn shutdown_command_exits_zero() {
    let mut s = Server::start(&[]);
    let mut c = s.raw();
    c.send(b"*1\r\n$8\r\nSHUTDOWN\r\n");
    assert!(c.is_closed());
    assert!(s.wait().success());
}
