//! Commands: one file per family, each command a function that reads its
//! arguments, acts on the store, and writes its reply.
//!
//! [`execute`] is the single entry: it finds the command in [`COMMANDS`],
//! checks authentication, arity and memory (for commands that may grow the
//! keyspace), runs it, and turns a [`CmdError`] into the error reply Redis
//! would send. A command error never closes the connection.
//!
//! Files: `connection.rs` (PING ECHO HELLO AUTH SELECT QUIT RESET CLIENT),
//! `server.rs` (INFO CONFIG DBSIZE FLUSH* TIME LATENCY SLOWLOG SHUTDOWN),
//! `introspect.rs` (COMMAND), `cluster.rs` (CLUSTER views, READONLY),
//! `string.rs`, `keyspace.rs`.

mod cluster;
mod connection;
mod introspect;
mod keyspace;
pub mod plan;
mod server;
pub(crate) mod string;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ringcache_protocol::{Args, Version, encode, key_slot, parse_i64};

use crate::cluster::topology::Topology;
use crate::config::Redirect;
use crate::shared::{ClientInfo, LocalStats, Outcome, Shared};

pub use server::info_text;

/// A command's reply writer, aware of the connection's RESP version.
pub struct Reply<'a> {
    pub buf: &'a mut BytesMut,
    pub v: Version,
}

impl Reply<'_> {
    #[inline]
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }
    #[inline]
    pub fn simple(&mut self, s: &str) {
        encode::simple(self.buf, s.as_bytes());
    }
    #[inline]
    pub fn bulk(&mut self, b: &[u8]) {
        encode::bulk(self.buf, b);
    }
    #[inline]
    pub fn null(&mut self) {
        encode::null(self.buf, self.v);
    }
    pub fn null_array(&mut self) {
        encode::null_array(self.buf, self.v);
    }
    #[inline]
    pub fn int(&mut self, n: i64) {
        encode::integer(self.buf, n);
    }
    #[inline]
    pub fn array(&mut self, n: usize) {
        encode::array_header(self.buf, n);
    }
    pub fn map(&mut self, n: usize) {
        encode::map_header(self.buf, n, self.v);
    }
    pub fn set(&mut self, n: usize) {
        encode::set_header(self.buf, n, self.v);
    }
    pub fn error(&mut self, text: &str) {
        encode::error(self.buf, text.as_bytes());
    }
    pub fn verbatim(&mut self, text: &[u8]) {
        encode::verbatim(self.buf, b"txt", text, self.v);
    }
    pub fn bulk_opt(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }
}

/// Per-connection state the commands see.
#[derive(Debug)]
pub struct ConnState {
    pub info: Arc<ClientInfo>,
    pub resp: Version,
    pub authenticated: bool,
    /// Set by QUIT (and SHUTDOWN): close after writing the replies so far.
    pub quit: bool,
    /// READONLY: reads of slots this node owns (as a replica too) are
    /// served here instead of by the primary.
    pub readonly: bool,
    /// Running a member's share of a cluster-wide command (DBSIZE, KEYS,
    /// SCAN): only the slots this node is primary for count.
    pub share: bool,
    /// A peer connection: requests arrive already routed (`RC.FWD`).
    pub peer: bool,
    /// The topology as of `topology_version` (see [`ConnState::topology`]).
    topology: Option<(u64, Arc<Topology>)>,
}

impl ConnState {
    pub fn new(info: Arc<ClientInfo>, needs_auth: bool) -> Self {
        ConnState {
            info,
            resp: Version::Resp2,
            authenticated: !needs_auth,
            quit: false,
            readonly: false,
            share: false,
            peer: false,
            topology: None,
        }
    }

    /// Whether `slot` counts for this connection's keyless commands: every
    /// slot normally, only this node's primary slots in a share.
    pub fn slot_filter(&mut self, shared: &Shared) -> Option<Arc<Topology>> {
        if !self.share {
            return None;
        }
        Some(self.topology(shared).clone())
    }

    /// The current topology, reloaded only when it changed.
    #[inline]
    pub fn topology(&mut self, shared: &Shared) -> &Arc<Topology> {
        let v = shared.topology_version();
        if self.topology.as_ref().is_none_or(|(seen, _)| *seen != v) {
            self.topology = Some((v, shared.topology()));
        }
        &self.topology.as_ref().expect("just set").1
    }
}

/// `--cluster-redirect moved`: where a request's keys live, when the
/// cluster has other members: keys of several slots are refused
/// (`CROSSSLOT`), and keys whose slot has another primary are redirected
/// (`MOVED`), as Redis Cluster does. (By default requests are forwarded
/// instead: see `net::exec`.)
fn route(ctx: &mut Ctx<'_>, spec: &Spec, args: Args<'_>) -> Result<(), CmdError> {
    if spec.first_key <= 0 || ctx.shared.config.cluster_redirect != Redirect::Moved {
        return Ok(());
    }
    let readonly = ctx.conn.readonly;
    let t = ctx.conn.topology(ctx.shared);
    if t.nodes.len() < 2 {
        return Ok(());
    }
    let argc = args.len() as i32;
    let last = if spec.last_key < 0 { argc + spec.last_key } else { spec.last_key.min(argc - 1) };
    let slot = key_slot(args.get(spec.first_key as usize));
    let mut i = spec.first_key + spec.step.max(1);
    while i <= last {
        if key_slot(args.get(i as usize)) != slot {
            return Err(CmdError::msg("CROSSSLOT Keys in request don't hash to the same slot"));
        }
        i += spec.step.max(1);
    }
    let owners = t.table.owners(slot);
    if readonly && spec.has_flag("readonly") && owners.contains(&t.me) {
        return Ok(()); // a replica serves reads after READONLY
    }
    let primary = owners[0];
    if primary != t.me {
        let addr = t.nodes[usize::from(primary)].client_addr;
        return Err(CmdError::msg(format!("MOVED {slot} {addr}")));
    }
    Ok(())
}

/// Everything a command runs with.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub conn: &'a mut ConnState,
    pub out: Reply<'a>,
    pub now_ms: u64,
    pub stats: &'a mut LocalStats,
}

/// A command's failure; [`CmdError::text`] is the error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    Syntax,
    NotInteger,
    NotFloat,
    Overflow,
    NoSuchKey,
    Oom,
    InvalidExpire(&'static str),
    /// Wrong number of arguments; the name is the command's (or
    /// `container|sub`) in lower case.
    Arity(String),
    UnknownSubcommand(String, &'static str),
    /// Any other message, with its prefix (`ERR ...`, `WRONGPASS ...`).
    Msg(Cow<'static, str>),
}

impl CmdError {
    pub fn msg(s: impl Into<Cow<'static, str>>) -> Self {
        CmdError::Msg(s.into())
    }

    pub fn text(&self) -> Cow<'_, str> {
        match self {
            CmdError::Syntax => "ERR syntax error".into(),
            CmdError::NotInteger => "ERR value is not an integer or out of range".into(),
            CmdError::NotFloat => "ERR value is not a valid float".into(),
            CmdError::Overflow => "ERR increment or decrement would overflow".into(),
            CmdError::NoSuchKey => "ERR no such key".into(),
            CmdError::Oom => "OOM command not allowed when used memory > 'maxmemory'.".into(),
            CmdError::InvalidExpire(cmd) => format!("ERR invalid expire time in '{cmd}' command").into(),
            CmdError::Arity(name) => format!("ERR wrong number of arguments for '{name}' command").into(),
            CmdError::UnknownSubcommand(sub, container) => {
                format!("ERR unknown subcommand '{}'. Try {container} HELP.", truncate(sub, 128)).into()
            }
            CmdError::Msg(m) => Cow::Borrowed(m),
        }
    }
}

pub type CmdResult = Result<(), CmdError>;

type Handler = fn(&mut Ctx<'_>, Args<'_>) -> CmdResult;

/// A command and what COMMAND INFO / DOCS say about it.
pub struct Spec {
    pub name: &'static str,
    /// Redis arity: n = exactly n arguments (name included); -n = at least n.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub run: Handler,
    /// Precomputed from `flags`: checked on every request.
    pub no_auth: bool,
    pub denyoom: bool,
    pub write: bool,
}

impl Spec {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.contains(&f)
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn has(flags: &[&str], f: &str) -> bool {
    let mut i = 0;
    while i < flags.len() {
        if str_eq(flags[i], f) {
            return true;
        }
        i += 1;
    }
    false
}

#[allow(clippy::too_many_arguments)]
const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    run: Handler,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        group,
        since,
        summary,
        run,
        no_auth: has(flags, "no-auth"),
        denyoom: has(flags, "denyoom"),
        write: has(flags, "write"),
    }
}

const NOKEYS: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const KEYS_ALL: (i32, i32, i32) = (1, -1, 1);
const KEYS_PAIRS: (i32, i32, i32) = (1, -1, 2);
const KEYS_TWO: (i32, i32, i32) = (1, 2, 1);

const R_FAST: &[&str] = &["readonly", "fast"];
const W_OOM: &[&str] = &["write", "denyoom"];
const W_OOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const W_FAST: &[&str] = &["write", "fast"];
const NOAUTH_FAST: &[&str] = &["noscript", "loading", "stale", "fast", "no-auth", "allow-busy"];

/// Every command the node knows.
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    // connection
    spec("ping", -1, &["fast"], NOKEYS, "connection", "1.0.0", "Returns the server's liveliness response.", connection::ping),
    spec("echo", 2, &["fast"], NOKEYS, "connection", "1.0.0", "Returns the given string.", connection::echo),
    spec("hello", -1, NOAUTH_FAST, NOKEYS, "connection", "6.0.0", "Handshakes with the Redis server.", connection::hello),
    spec("auth", -2, NOAUTH_FAST, NOKEYS, "connection", "1.0.0", "Authenticates the connection.", connection::auth),
    spec("select", 2, &["loading", "stale", "fast"], NOKEYS, "connection", "1.0.0", "Changes the selected database (only 0 exists).", connection::select),
    spec("quit", -1, &["noscript", "loading", "stale", "fast", "no-auth", "allow-busy"], NOKEYS, "connection", "1.0.0", "Closes the connection.", connection::quit),
    spec("reset", 1, NOAUTH_FAST, NOKEYS, "connection", "6.2.0", "Resets the connection.", connection::reset),
    spec("client", -2, &["noscript", "loading", "stale"], NOKEYS, "connection", "2.4.0", "A container for client connection commands.", connection::client),
    // server
    spec("command", -1, &["loading", "stale"], NOKEYS, "server", "2.8.13", "Returns detailed information about all commands.", introspect::command),
    spec("info", -1, &["loading", "stale"], NOKEYS, "server", "1.0.0", "Returns information and statistics about the server.", server::info),
    spec("config", -2, &["admin", "noscript", "loading", "stale"], NOKEYS, "server", "2.0.0", "A container for server configuration commands.", server::config),
    spec("dbsize", 1, R_FAST, NOKEYS, "server", "1.0.0", "Returns the number of keys in the database.", server::dbsize),
    spec("flushall", -1, &["write"], NOKEYS, "server", "1.0.0", "Removes all keys from all databases.", server::flushall),
    spec("flushdb", -1, &["write"], NOKEYS, "server", "1.0.0", "Remove all keys from the current database.", server::flushall),
    spec("time", 1, &["loading", "stale", "fast"], NOKEYS, "server", "2.6.0", "Returns the server time.", server::time),
    spec("latency", -2, &["admin", "noscript", "loading", "stale"], NOKEYS, "server", "2.8.13", "A container for latency diagnostics commands.", server::latency),
    spec("slowlog", -2, &["admin", "loading", "stale"], NOKEYS, "server", "2.2.12", "A container for slow log commands.", server::slowlog),
    spec("cluster", -2, &["loading", "stale"], NOKEYS, "cluster", "3.0.0", "A container for Redis Cluster views of the slot table.", cluster::cluster),
    spec("readonly", 1, &["loading", "stale", "fast"], NOKEYS, "cluster", "3.0.0", "Enables read-only queries for a connection to a replica.", cluster::readonly),
    spec("readwrite", 1, &["loading", "stale", "fast"], NOKEYS, "cluster", "3.0.0", "Enables read-write queries for a connection to a replica.", cluster::readonly),
    spec("shutdown", -1, &["admin", "noscript", "loading", "stale", "no-multi", "allow-busy"], NOKEYS, "server", "1.0.0", "Stops the node after letting connections finish.", server::shutdown),
    // string
    spec("get", 2, R_FAST, KEY1, "string", "1.0.0", "Returns the string value of a key.", string::get),
    spec("set", -3, W_OOM, KEY1, "string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", string::set),
    spec("setnx", 3, W_OOM_FAST, KEY1, "string", "1.0.0", "Set the string value of a key only when the key doesn't exist.", string::setnx),
    spec("setex", 4, W_OOM, KEY1, "string", "2.0.0", "Sets the string value and expiration time of a key.", string::setex),
    spec("psetex", 4, W_OOM, KEY1, "string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key.", string::psetex),
    spec("getset", 3, W_OOM_FAST, KEY1, "string", "1.0.0", "Returns the previous string value of a key after setting it to a new value.", string::getset),
    spec("getdel", 2, W_FAST, KEY1, "string", "6.2.0", "Returns the string value of a key after deleting the key.", string::getdel),
    spec("getex", -2, W_FAST, KEY1, "string", "6.2.0", "Returns the string value of a key after setting its expiration time.", string::getex),
    spec("mget", -2, R_FAST, KEYS_ALL, "string", "1.0.0", "Atomically returns the string values of one or more keys.", string::mget),
    spec("mset", -3, W_OOM, KEYS_PAIRS, "string", "1.0.1", "Atomically creates or modifies the string values of one or more keys.", string::mset),
    spec("msetnx", -3, W_OOM, KEYS_PAIRS, "string", "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", string::msetnx),
    spec("append", 3, W_OOM_FAST, KEY1, "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", string::append),
    spec("strlen", 2, R_FAST, KEY1, "string", "2.2.0", "Returns the length of a string value.", string::strlen),
    spec("getrange", 4, &["readonly"], KEY1, "string", "2.4.0", "Returns a substring of the string stored at a key.", string::getrange),
    spec("substr", 4, &["readonly"], KEY1, "string", "1.0.0", "Returns a substring from a string value.", string::getrange),
    spec("setrange", 4, W_OOM, KEY1, "string", "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", string::setrange),
    spec("incr", 2, W_OOM_FAST, KEY1, "string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", string::incr),
    spec("decr", 2, W_OOM_FAST, KEY1, "string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", string::decr),
    spec("incrby", 3, W_OOM_FAST, KEY1, "string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", string::incrby),
    spec("decrby", 3, W_OOM_FAST, KEY1, "string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", string::decrby),
    spec("incrbyfloat", 3, W_OOM_FAST, KEY1, "string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", string::incrbyfloat),
    // keyspace
    spec("del", -2, &["write"], KEYS_ALL, "generic", "1.0.0", "Deletes one or more keys.", keyspace::del),
    spec("unlink", -2, W_FAST, KEYS_ALL, "generic", "4.0.0", "Asynchronously deletes one or more keys.", keyspace::del),
    spec("exists", -2, R_FAST, KEYS_ALL, "generic", "1.0.0", "Determines whether one or more keys exist.", keyspace::exists),
    spec("touch", -2, R_FAST, KEYS_ALL, "generic", "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", keyspace::touch),
    spec("type", 2, R_FAST, KEY1, "generic", "1.0.0", "Determines the type of value stored at a key.", keyspace::type_),
    spec("expire", -3, W_FAST, KEY1, "generic", "1.0.0", "Sets the expiration time of a key in seconds.", keyspace::expire),
    spec("pexpire", -3, W_FAST, KEY1, "generic", "2.6.0", "Sets the expiration time of a key in milliseconds.", keyspace::pexpire),
    spec("expireat", -3, W_FAST, KEY1, "generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", keyspace::expireat),
    spec("pexpireat", -3, W_FAST, KEY1, "generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", keyspace::pexpireat),
    spec("ttl", 2, R_FAST, KEY1, "generic", "1.0.0", "Returns the expiration time in seconds of a key.", keyspace::ttl),
    spec("pttl", 2, R_FAST, KEY1, "generic", "2.6.0", "Returns the expiration time in milliseconds of a key.", keyspace::pttl),
    spec("expiretime", 2, R_FAST, KEY1, "generic", "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", keyspace::expiretime),
    spec("pexpiretime", 2, R_FAST, KEY1, "generic", "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", keyspace::pexpiretime),
    spec("persist", 2, W_FAST, KEY1, "generic", "2.2.0", "Removes the expiration time of a key.", keyspace::persist),
    spec("keys", 2, &["readonly"], NOKEYS, "generic", "1.0.0", "Returns all key names that match a pattern.", keyspace::keys),
    spec("scan", -2, &["readonly"], NOKEYS, "generic", "2.8.0", "Iterates over the key names in the database.", keyspace::scan),
    spec("randomkey", 1, &["readonly"], NOKEYS, "generic", "1.0.0", "Returns a random key name from the database.", keyspace::randomkey),
    spec("rename", 3, &["write"], KEYS_TWO, "generic", "1.0.0", "Renames a key and overwrites the destination.", keyspace::rename),
    spec("renamenx", 3, W_FAST, KEYS_TWO, "generic", "1.0.0", "Renames a key only when the target key name doesn't exist.", keyspace::renamenx),
    spec("copy", -3, W_OOM, KEYS_TWO, "generic", "6.2.0", "Copies the value of a key to a new key.", keyspace::copy),
];

static BY_NAME: LazyLock<HashMap<&'static [u8], usize>> =
    LazyLock::new(|| COMMANDS.iter().enumerate().map(|(i, c)| (c.name.as_bytes(), i)).collect());

/// Longest command name; longer names are unknown without a lookup.
const NAME_LEN_MAX: usize = 16;

/// Finds a command by name, case-insensitively.
#[inline]
pub fn lookup(name: &[u8]) -> Option<usize> {
    if name.len() > NAME_LEN_MAX {
        return None;
    }
    let mut lower = [0u8; NAME_LEN_MAX];
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    BY_NAME.get(&lower[..name.len()]).copied()
}

pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unknown_command(args: Args<'_>) -> String {
    // Redis: "unknown command '%.128s', with args beginning with: 'a' 'b' ",
    // formatted with %s, so each argument ends at its first NUL byte.
    let c_str = |a: &[u8]| -> Vec<u8> { a.iter().take_while(|&&c| c != 0).copied().collect() };
    let name = String::from_utf8_lossy(&c_str(args.get(0))).into_owned();
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(&c_str(a)).into_owned();
        let room = 128 - rest.len();
        rest.push('\'');
        rest.push_str(truncate(&a, room));
        rest.push_str("' ");
    }
    format!("ERR unknown command '{}', with args beginning with: {rest}", truncate(&name, 128))
}

/// Why a request is refused before its command runs.
enum Refusal {
    Unknown,
    NoAuth(usize),
    Arity(usize),
}

/// The command a request names, if it may run: known, authenticated (or
/// allowed without), right arity.
fn check(conn: &ConnState, shared: &Shared, args: Args<'_>) -> Result<usize, Refusal> {
    let idx = lookup(args.get(0)).ok_or(Refusal::Unknown)?;
    let spec = &COMMANDS[idx];
    // A password cleared at run time frees connections that never
    // authenticated, as in Redis (the default user becomes `nopass`).
    if !conn.authenticated && !spec.no_auth && shared.settings.requirepass().is_some() {
        return Err(Refusal::NoAuth(idx));
    }
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return Err(Refusal::Arity(idx));
    }
    Ok(idx)
}

/// Whether `execute` would refuse the request before running it (unknown
/// command, not authenticated, wrong arity): such requests never leave the
/// node, whatever their keys.
pub fn precheck(conn: &ConnState, shared: &Shared, args: Args<'_>) -> Option<&'static Spec> {
    check(conn, shared, args).ok().map(|i| &COMMANDS[i])
}

/// Runs one request and writes its reply. Returns the command if its
/// handler ran (whether it succeeded or answered an error).
pub fn execute(ctx: &mut Ctx<'_>, args: Args<'_>) -> Option<&'static Spec> {
    let idx = match check(ctx.conn, ctx.shared, args) {
        Ok(idx) => idx,
        Err(Refusal::Unknown) => {
            ctx.stats.unknown += 1;
            let text = unknown_command(args);
            ctx.out.error(&text);
            return None;
        }
        Err(Refusal::NoAuth(idx)) => {
            ctx.conn.info.last_cmd.store(idx as u16, Relaxed);
            ctx.stats.record(idx, Outcome::Rejected);
            ctx.out.error("NOAUTH Authentication required.");
            return None;
        }
        Err(Refusal::Arity(idx)) => {
            ctx.conn.info.last_cmd.store(idx as u16, Relaxed);
            ctx.stats.record(idx, Outcome::Rejected);
            ctx.out.error(&CmdError::Arity(COMMANDS[idx].name.to_string()).text());
            return None;
        }
    };
    let spec = &COMMANDS[idx];
    ctx.conn.info.last_cmd.store(idx as u16, Relaxed);
    if let Err(e) = route(ctx, spec, args) {
        ctx.stats.record(idx, Outcome::Rejected);
        ctx.out.error(&e.text());
        return None;
    }
    if spec.denyoom && ctx.shared.store.make_room(ctx.now_ms).is_err() {
        ctx.stats.record(idx, Outcome::Rejected);
        ctx.out.error(&CmdError::Oom.text());
        return None;
    }
    match (spec.run)(ctx, args) {
        Ok(()) => ctx.stats.record(idx, Outcome::Ok),
        Err(e) => {
            ctx.stats.record(idx, Outcome::Failed);
            ctx.out.error(&e.text());
        }
    }
    Some(spec)
}

// ---- argument helpers shared by the command files ---------------------------

pub fn arg_i64(a: &[u8]) -> Result<i64, CmdError> {
    parse_i64(a).ok_or(CmdError::NotInteger)
}

/// Parses a float the way Redis's `string2ld` accepts it: no spaces, not NaN.
pub fn arg_f64(a: &[u8]) -> Result<f64, CmdError> {
    let s = std::str::from_utf8(a).map_err(|_| CmdError::NotFloat)?;
    if s.is_empty() || s.starts_with(|c: char| c.is_whitespace()) || s.ends_with(|c: char| c.is_whitespace()) {
        return Err(CmdError::NotFloat);
    }
    let lower = s.to_ascii_lowercase();
    let v: f64 = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if lower.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'-' | b'+')) => {
            lower.parse().map_err(|_| CmdError::NotFloat)?
        }
        _ => return Err(CmdError::NotFloat),
    };
    if v.is_nan() {
        return Err(CmdError::NotFloat);
    }
    Ok(v)
}

pub fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Lower-case name of a subcommand for arity errors: `client|kill`.
pub fn sub_name(container: &str, sub: &[u8]) -> String {
    format!("{container}|{}", String::from_utf8_lossy(sub).to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
