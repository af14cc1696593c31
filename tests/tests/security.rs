//! Secure by default, with real processes: a node without a cluster
//! secret is a standalone cache with no cluster port; with one, nothing on
//! the cluster port answers a stranger; remote input is bounded (member
//! records, versions from the future); the admin port wants its token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use foca::Codec as _;
use ringcache_protocol::Frame;
use ringcache_server::cluster::membership::{CheckedCodec, NodeIdentity, PacketKey};
use ringcache_tests::reply::*;
use ringcache_tests::{Cluster, Raw, Server, TEST_SECRET, WAIT, cluster_info_field, free_port, info_field};

fn is_err(f: &Frame, prefix: &str) -> bool {
    matches!(f, Frame::Error(e) if e.starts_with(prefix.as_bytes()))
}

#[test]
fn without_a_secret_a_node_is_standalone_and_opens_no_cluster_port() {
    let (port, cport) = (free_port(), free_port());
    let s = Server::start(&["--port", &port.to_string(), "--cluster-port", &cport.to_string()]);
    assert!(TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], cport)), WAIT).is_err(), "cluster port open");
    assert_eq!(info_field(&s, "server", "redis_mode"), "standalone");
    assert_eq!(info_field(&s, "cluster", "cluster_enabled"), "0");
    let mut r = s.raw();
    for cmd in [&["CLUSTER", "INFO"][..], &["CLUSTER", "SLOTS"], &["READONLY"]] {
        let reply = r.cmd(cmd);
        assert!(matches!(&reply, Frame::Error(e) if e.ends_with(b"cluster support disabled")), "{cmd:?}: {reply:?}");
    }
    assert_eq!(r.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(r.cmd(&["GET", "k"]), bulk("v"));
    assert!(s.log().contains("standalone"), "{}", s.log());
    // The Rust client treats it as one server holding every slot.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = ringcache_client::Client::connect(vec![s.addr.to_string()]).await.expect("client");
        assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        client.set("k2", "w").await.unwrap();
    });
    assert_eq!(r.cmd(&["GET", "k2"]), bulk("w"));
}

#[test]
fn a_stranger_on_the_cluster_port_reads_and_writes_nothing() {
    let c = Cluster::start(2, &[]);
    c.wait_converged(2);
    assert_eq!(c.node(0).raw().cmd(&["SET", "secret-key", "secret-value"]), ok());
    let cluster_port = SocketAddr::new(c.node(0).addr.ip(), c.ports[0].1);
    // Straight to a data command: refused, connection closed.
    let mut r = Raw::connect(cluster_port);
    let reply = r.cmd(&["RC.READ", "secret-key"]);
    assert!(is_err(&reply, "NOAUTH"), "{reply:?}");
    assert!(r.is_closed());
    // A handshake without the secret: the proof fails, nothing is served.
    let mut r = Raw::connect(cluster_port);
    let Frame::Array(h) = r.cmd(&["RC.HELLO", "stranger", "00112233445566778899aabbccddeeff"]) else {
        panic!("handshake")
    };
    assert_eq!(h.len(), 2);
    let reply = r.cmd(&["RC.AUTH", &"0".repeat(64)]);
    assert!(is_err(&reply, "ERR peer authentication failed"), "{reply:?}");
    assert!(r.is_closed());
    // Forwarding a command as a client would: same.
    let mut r = Raw::connect(cluster_port);
    let reply = r.cmd(&["RC.FWD", "2", "p", "99999999999999", "0", "FLUSHALL"]);
    assert!(is_err(&reply, "NOAUTH"), "{reply:?}");
    let refused: u64 = info_field(c.node(0), "replication", "peer_rejected_connections").parse().unwrap();
    assert!(refused >= 3, "refusals counted: {refused}");
    assert_eq!(c.node(1).raw().cmd(&["GET", "secret-key"]), bulk("secret-value"), "the data is untouched");
}

#[test]
fn a_member_record_with_an_oversized_weight_is_refused() {
    let c = Cluster::start(2, &[]);
    c.wait_converged(2);
    let target = SocketAddr::new(c.node(0).addr.ip(), c.ports[0].1);
    // Sealed with the right secret: it passes the MAC, then the record check.
    let giant = NodeIdentity {
        name: "giant".into(),
        generation: 1,
        gossip_addr: "127.0.0.1:9".parse().unwrap(),
        client_addr: "127.0.0.1:9".parse().unwrap(),
        weight: u32::MAX,
    };
    let header = foca::Header {
        src: giant,
        src_incarnation: 0,
        dst: NodeIdentity::seed(target),
        message: foca::Message::Announce,
    };
    let mut payload = Vec::new();
    CheckedCodec::default().encode_header(&header, &mut payload).expect("encode");
    let mut packet = Vec::new();
    // The nodes' settings (the defaults), as a member's packets carry them.
    let settings = ringcache_server::config::Config::default().cluster_settings();
    PacketKey::new("ringcache", Some(TEST_SECRET), settings).seal(&payload, &mut packet);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&packet, target).unwrap();
    c.eventually("the forged record to be refused", || {
        info_field(c.node(0), "cluster", "gossip_members_refused") != "0"
    });
    assert_eq!(cluster_info_field(&mut c.node(0).raw(), "cluster_known_nodes"), "2");
    // (The log is read from the process's stderr by another thread.)
    c.node(0).wait_log("invalid member record");
}

#[test]
fn a_version_from_the_far_future_is_refused() {
    let c = Cluster::start(2, &[]);
    c.wait_converged(2);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let version = |ms: u64| ((ms << 10) << 12).to_string();
    let mut p = c.peer(0);
    // An hour ahead: refused, counted, not applied.
    let reply = p.cmd(&["RC.PUT", "future", &version(now_ms + 3_600_000), "0", "v"]);
    assert!(is_err(&reply, "ERR version too far ahead"), "{reply:?}");
    assert_eq!(info_field(c.node(0), "replication", "versions_refused"), "1");
    assert_eq!(c.key_state(0, "future").version(), 0);
    // A second ahead: within the allowed skew.
    assert_eq!(p.cmd(&["RC.PUT", "near", &version(now_ms + 1000), "0", "v"]), ok());
}

/// `GET path` with optional bearer token: (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn the_admin_port_wants_its_token() {
    let s = Server::start(&["--admin-port", "0", "--admin-token", "tok3n"]);
    let admin = s.admin.expect("admin");
    assert!(admin.ip().is_loopback(), "admin binds loopback by default: {admin}");
    assert_eq!(get(admin, "/metrics", None).0, 401);
    assert_eq!(get(admin, "/metrics", Some("wrong")).0, 401);
    assert_eq!(get(admin, "/cluster", None).0, 401);
    let (status, body) = get(admin, "/metrics", Some("tok3n"));
    assert_eq!(status, 200);
    assert!(body.contains("ringcache_admin_unauthorized_total 3"), "{body}");
    // Probes learn the status code and nothing else.
    assert_eq!(get(admin, "/ready", None), (200, String::new()));
    assert_eq!(get(admin, "/health", None), (200, String::new()));
    assert_eq!(get(admin, "/ready", Some("tok3n")), (200, "ready\n".to_string()));
}
