//! TLS on the client port, with real clients: `redis-cli --tls`, redis-py
//! with `ssl=True` and `ringcache-client`'s `TlsConnector`, client
//! certificates required by default (as Redis), plain text refused on the
//! TLS port, and a rotated certificate served without a restart.
//! Certificates are made by `openssl` for each test in a scratch directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringcache_tests::{Server, WAIT, free_port, info_field, output_within, poll_until};

/// The key options of every `openssl req` here: a new P-256 key, unencrypted.
const NEW_EC_KEY: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in
/// a directory removed on drop.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringcache-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pki { dir };
        let ca = ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=ringcache test CA"];
        let ca_ext =
            ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
        openssl(&p.dir, &[&["req", "-x509"], NEW_EC_KEY, &ca, &ca_ext].concat());
        p.issue("server", "serverAuth", "/CN=ringcache test server");
        p.issue("client", "clientAuth", "/CN=ringcache test client");
        p
    }

    /// `name.crt`/`name.key` signed by the CA.
    fn issue(&self, name: &str, usage: &str, subject: &str) {
        let ext = format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
        );
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, crt, extf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        openssl(&self.dir, &[&["req"], NEW_EC_KEY, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }

    /// `--tls-cert-file`, `--tls-key-file` and `--tls-ca-cert-file` for the
    /// certificate `name` (issued by this CA).
    fn server_args(&self, name: &str) -> Vec<String> {
        let (cert, key) = (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")));
        ["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &self.path("ca.crt")]
            .map(String::from)
            .to_vec()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(pki: &Pki, tls_port: u16, auth: &str) -> Server {
    let mut args = vec!["--tls-port".to_string(), tls_port.to_string(), "--tls-auth-clients".into(), auth.into()];
    args.extend(pki.server_args("server"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

fn redis_cli_tls(pki: &Pki, port: u16, with_cert: bool, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert", &pki.path("ca.crt"), "-h", "127.0.0.1", "-p", &port.to_string()]);
    if with_cert {
        cmd.args(["--cert", &pki.path("client.crt"), "--key", &pki.path("client.key")]);
    }
    cmd.args(args);
    let out = output_within(cmd, Duration::from_secs(20));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

#[test]
fn tls_clients_round_trip_and_plain_text_is_refused() {
    let pki = Pki::new("roundtrip");
    let tls_port = free_port();
    let s = start(&pki, tls_port, "yes");
    s.wait_log("listening for TLS clients");

    // redis-cli --tls with a client certificate.
    assert_eq!(redis_cli_tls(&pki, tls_port, true, &["SET", "k", "over-tls"]), (true, "OK".to_string()));
    assert_eq!(redis_cli_tls(&pki, tls_port, true, &["GET", "k"]), (true, "over-tls".to_string()));
    // Without one, the handshake is refused (tls-auth-clients yes).
    let (_, text) = redis_cli_tls(&pki, tls_port, false, &["GET", "k"]);
    assert!(!text.contains("over-tls"), "served without a client certificate: {text}");

    // redis-py with ssl=True.
    let script = format!(
        "import redis\n\
         r = redis.Redis(host='127.0.0.1', port={tls_port}, ssl=True, ssl_ca_certs='{}', ssl_certfile='{}', ssl_keyfile='{}')\n\
         r.set('py', 'tls'); assert r.get('py') == b'tls'; print('ok', r.get('k').decode())\n",
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let mut py = Command::new(ringcache_tests::redis_py());
    py.args(["-c", &script]);
    let out = output_within(py, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok over-tls"), "redis-py: {stdout}{}", String::from_utf8_lossy(&out.stderr));

    // ringcache-client with its TlsConnector.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (cert, key) = (PathBuf::from(pki.path("client.crt")), PathBuf::from(pki.path("client.key")));
        let tls = ringcache_client::TlsConnector::from_pem_files(pki.path("ca.crt"), Some((&cert, &key)), None)
            .expect("TLS files");
        let opts = ringcache_client::Options { connector: Some(std::sync::Arc::new(tls)), ..Default::default() };
        let client = ringcache_client::Client::with_options([format!("127.0.0.1:{tls_port}")], opts).await.unwrap();
        assert_eq!(client.get("py").await.unwrap().as_deref(), Some(&b"tls"[..]));
        client.set("rust", "tls").await.unwrap();
    });

    // Plain RESP on the TLS port gets no RESP answer and is closed.
    let mut plain = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], tls_port)), WAIT).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("PONG"), "plain text served on the TLS port");
    // Counted once the handshake task gives up (just after the close).
    let counted = || info_field(&s, "stats", "tls_handshake_failures").parse::<u64>().unwrap() >= 2;
    Server::eventually("both refused handshakes to be counted", counted);
    // The plain port is unchanged.
    assert_eq!(s.raw().cmd(&["GET", "rust"]), ringcache_tests::reply::bulk("tls"));
}

/// The subject of the certificate the TLS port serves now.
fn served_subject(pki: &Pki, port: u16) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile", &pki.path("ca.crt")])
        .stdin(std::process::Stdio::null());
    let out = output_within(cmd, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or("").to_string()
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new("rotate");
    let tls_port = free_port();
    let s = start(&pki, tls_port, "no");
    assert!(served_subject(&pki, tls_port).contains("ringcache test server"));
    // The operator replaces the files (as cert-manager or certbot would)
    // and signals the node.
    pki.issue("server", "serverAuth", "/CN=ringcache rotated server");
    s.signal("HUP");
    let rotated = || served_subject(&pki, tls_port).contains("ringcache rotated server");
    if poll_until(Duration::from_secs(20), rotated).is_err() {
        panic!("the rotated certificate is not served: {}\n{}", served_subject(&pki, tls_port), s.log());
    }
    s.wait_log("TLS certificates reloaded");
    // A broken file keeps the previous certificate.
    std::fs::write(pki.dir.join("server.crt"), "not a certificate").unwrap();
    s.signal("HUP");
    s.wait_log("TLS reload failed");
    assert!(served_subject(&pki, tls_port).contains("ringcache rotated server"));
    assert_eq!(s.raw().cmd(&["PING"]), ringcache_tests::reply::simple("PONG"));
}

/// `--tls-cluster yes`: peer links are mutual TLS with each node's
/// certificate; a 3-node cluster forms and replicates over them, and a
/// plain-text peer on the cluster port gets nothing.
#[test]
fn a_tls_cluster_forms_and_replicates() {
    let pki = Pki::new("cluster");
    pki.issue("node", "serverAuth,clientAuth", "/CN=ringcache test node");
    let mut args = vec!["--tls-cluster".to_string(), "yes".into(), "--gossip-suspect-ms".into(), "2000".into()];
    args.extend(pki.server_args("node"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = ringcache_tests::Cluster::start(3, &args);
    c.wait_converged(3);
    for i in 0..100 {
        assert_eq!(c.node(i % 3).raw().cmd(&["SET", &format!("k{i}"), "v"]), ringcache_tests::reply::ok());
    }
    // Every key on every owner (RF=3 on 3 nodes): replicated over TLS.
    // (READONLY: each node answers from its own copy.)
    let holds_all = |n: usize| {
        let mut r = c.node(n).raw();
        r.cmd(&["READONLY"]);
        (0..100).all(|i| r.cmd(&["GET", &format!("k{i}")]) == ringcache_tests::reply::bulk("v"))
    };
    c.eventually("every owner to hold every key", || (0..3).all(holds_all));
    // SIGHUP reloads the peer-link certificates too.
    c.node(0).signal("HUP");
    c.eventually("the peer-link reload to be logged", || {
        c.node(0).log().contains("peer-link TLS certificates reloaded")
    });
    assert_eq!(c.node(1).raw().cmd(&["SET", "after-hup", "v"]), ringcache_tests::reply::ok());
    // The cluster port speaks only TLS: a plain RC.HELLO gets no answer.
    let mut plain = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], c.ports[0].1)), WAIT).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"*3\r\n$8\r\nRC.HELLO\r\n$1\r\nx\r\n$2\r\nab\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"*2"), "a plain-text peer got a handshake reply");
}
