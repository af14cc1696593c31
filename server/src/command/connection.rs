//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use std::sync::atomic::Ordering::Relaxed;

use ringcache_protocol::{Args, Version};

use super::{CmdError, CmdResult, Ctx, arg_i64, eq_ic, sub_name};

/// The Redis version whose behaviour ringcache follows; clients read it from
/// HELLO and INFO to decide which features they may use.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

pub fn ping(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => return Err(CmdError::Arity("ping".into())),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ctx.out.bulk(args.get(1));
    Ok(())
}

/// Compares without an early exit, so timing does not reveal the password.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AUTH / HELLO AUTH. `legacy` is the one-argument `AUTH <password>` form.
/// Without a configured password the `default` user has none (Redis's
/// `nopass`): any password for it is accepted, other users are refused, and
/// the legacy form is an error telling the operator no password is set.
fn check_auth(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8], legacy: bool) -> CmdResult {
    let wrong = || CmdError::msg("WRONGPASS invalid username-password pair or user is disabled.");
    match ctx.shared.settings.requirepass() {
        None if legacy => Err(CmdError::msg(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        None if user == b"default" => {
            ctx.conn.authenticated = true;
            Ok(())
        }
        None => Err(wrong()),
        Some(required) if user == b"default" && same_secret(pass, required.as_bytes()) => {
            ctx.conn.authenticated = true;
            Ok(())
        }
        Some(_) => Err(wrong()),
    }
}

pub fn auth(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        2 => check_auth(ctx, b"default", args.get(1), true)?,
        3 => check_auth(ctx, args.get(1), args.get(2), false)?,
        _ => return Err(CmdError::Syntax),
    }
    ctx.out.ok();
    Ok(())
}

fn valid_client_name(name: &[u8]) -> Result<(), CmdError> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CmdError::msg("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

fn set_name(ctx: &mut Ctx<'_>, name: &[u8]) {
    *ctx.conn.info.name.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = name.to_vec();
}

pub fn hello(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut version = ctx.conn.resp;
    let mut i = 1;
    if args.len() > 1 {
        let v = arg_i64(args.get(1))
            .map_err(|_| CmdError::msg("ERR Protocol version is not an integer or out of range"))?;
        version = match v {
            2 => Version::Resp2,
            3 => Version::Resp3,
            _ => return Err(CmdError::msg("NOPROTO unsupported protocol version")),
        };
        i = 2;
    }
    let mut auth: Option<(&[u8], &[u8])> = None;
    let mut name: Option<&[u8]> = None;
    while i < args.len() {
        let a = args.get(i);
        let left = args.len() - i - 1;
        if eq_ic(a, "AUTH") && left >= 2 {
            auth = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if eq_ic(a, "SETNAME") && left >= 1 {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            return Err(CmdError::msg(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(a))));
        }
    }
    if let Some((user, pass)) = auth {
        check_auth(ctx, user, pass, false)?;
    }
    if !ctx.conn.authenticated {
        return Err(CmdError::msg(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
             AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
             version at the same time",
        ));
    }
    if let Some(n) = name {
        valid_client_name(n)?;
        set_name(ctx, n);
    }
    ctx.conn.resp = version;
    ctx.out.v = version;
    ctx.conn.info.resp.store(if version == Version::Resp3 { 3 } else { 2 }, Relaxed);
    let out = &mut ctx.out;
    out.map(8);
    out.bulk(b"server");
    out.bulk(b"ringcache");
    out.bulk(b"version");
    out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"ringcache_version");
    out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
    out.bulk(b"proto");
    out.int(if version == Version::Resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.conn.info.id as i64);
    out.bulk(b"mode");
    out.bulk(b"cluster");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if arg_i64(args.get(1))? != 0 {
        return Err(CmdError::msg("ERR DB index is out of range"));
    }
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.ok();
    ctx.conn.quit = true;
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.conn.resp = Version::Resp2;
    ctx.out.v = Version::Resp2;
    ctx.conn.info.resp.store(2, Relaxed);
    ctx.conn.authenticated = ctx.shared.settings.requirepass().is_none();
    set_name(ctx, b"");
    ctx.out.simple("RESET");
    Ok(())
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>,",
    "    TYPE normal, USER default, SKIPME (yes|no).",
    "LIST [TYPE normal] [ID <client-id> [<client-id> ...]]",
    "    Return information about client connections.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Record the client library's name or version.",
    "NO-EVICT (ON|OFF), NO-TOUCH (ON|OFF)",
    "    Accepted for compatibility; no effect.",
    "HELP",
    "    Print this help.",
];

pub fn help(ctx: &mut Ctx<'_>, lines: &[&str]) {
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
}

pub fn client(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    let n = args.len();
    let arity = || CmdError::Arity(sub_name("client", sub));
    if eq_ic(sub, "ID") {
        if n != 2 {
            return Err(arity());
        }
        ctx.out.int(ctx.conn.info.id as i64);
    } else if eq_ic(sub, "SETNAME") {
        if n != 3 {
            return Err(arity());
        }
        valid_client_name(args.get(2))?;
        set_name(ctx, args.get(2));
        ctx.out.ok();
    } else if eq_ic(sub, "GETNAME") {
        if n != 2 {
            return Err(arity());
        }
        let name = ctx.conn.info.name();
        ctx.out.bulk_opt(Some(name.as_slice()).filter(|n| !n.is_empty()));
    } else if eq_ic(sub, "INFO") {
        if n != 2 {
            return Err(arity());
        }
        let line = ctx.conn.info.line(ctx.now_ms) + "\n";
        ctx.out.verbatim(line.as_bytes());
    } else if eq_ic(sub, "LIST") {
        client_list(ctx, args)?;
    } else if eq_ic(sub, "KILL") {
        if n < 3 {
            return Err(arity());
        }
        client_kill(ctx, args)?;
    } else if eq_ic(sub, "SETINFO") {
        if n != 4 {
            return Err(arity());
        }
        let attr = args.get(2);
        let value = args.get(3);
        let slot = if eq_ic(attr, "LIB-NAME") {
            &ctx.conn.info.lib_name
        } else if eq_ic(attr, "LIB-VER") {
            &ctx.conn.info.lib_ver
        } else {
            return Err(CmdError::msg(format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(attr))));
        };
        if value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
            return Err(CmdError::msg(format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                String::from_utf8_lossy(attr).to_ascii_lowercase()
            )));
        }
        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = value.to_vec();
        ctx.out.ok();
    } else if eq_ic(sub, "NO-EVICT") || eq_ic(sub, "NO-TOUCH") {
        if n != 3 {
            return Err(arity());
        }
        if !eq_ic(args.get(2), "ON") && !eq_ic(args.get(2), "OFF") {
            return Err(CmdError::Syntax);
        }
        ctx.out.ok();
    } else if eq_ic(sub, "HELP") {
        help(ctx, CLIENT_HELP);
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "CLIENT"));
    }
    Ok(())
}

fn client_list(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if eq_ic(a, "TYPE") && i + 1 < args.len() {
            let t = args.get(i + 1);
            if !(eq_ic(t, "normal") || eq_ic(t, "master") || eq_ic(t, "replica") || eq_ic(t, "pubsub")) {
                return Err(CmdError::msg(format!("ERR Unknown client type '{}'", String::from_utf8_lossy(t))));
            }
            if !eq_ic(t, "normal") {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if eq_ic(a, "ID") && i + 1 < args.len() {
            let mut list = Vec::new();
            for id in args.iter().skip(i + 1) {
                let id = arg_i64(id).ok().filter(|n| *n > 0).ok_or_else(|| CmdError::msg("ERR Invalid client ID"))?;
                list.push(id as u64);
            }
            ids = Some(list);
            i = args.len();
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let mut text = String::new();
    for c in ctx.shared.clients.all() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&c.id)) {
            text.push_str(&c.line(ctx.now_ms));
            text.push('\n');
        }
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn client_kill(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let me = ctx.conn.info.id;
    if args.len() == 3 {
        // Old form: CLIENT KILL ip:port
        let addr = String::from_utf8_lossy(args.get(2)).into_owned();
        let Some(c) = ctx.shared.clients.all().into_iter().find(|c| c.addr.to_string() == addr) else {
            return Err(CmdError::msg("ERR No such client"));
        };
        if c.id == me {
            ctx.conn.quit = true;
        } else {
            c.kill();
        }
        ctx.out.ok();
        return Ok(());
    }
    let (mut id, mut addr, mut laddr, mut skipme) = (None, None, None, true);
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(CmdError::Syntax);
        }
        let (opt, v) = (args.get(i), args.get(i + 1));
        let text = String::from_utf8_lossy(v).into_owned();
        if eq_ic(opt, "ID") {
            id = Some(
                arg_i64(v)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| CmdError::msg("ERR client-id should be greater than 0"))? as u64,
            );
        } else if eq_ic(opt, "ADDR") {
            addr = Some(text);
        } else if eq_ic(opt, "LADDR") {
            laddr = Some(text);
        } else if eq_ic(opt, "SKIPME") {
            skipme = match text.to_ascii_lowercase().as_str() {
                "yes" => true,
                "no" => false,
                _ => return Err(CmdError::Syntax),
            };
        } else if eq_ic(opt, "TYPE") {
            if !eq_ic(v, "normal") {
                // No other kind of client exists on a ringcache node.
                id = Some(0);
            }
        } else if eq_ic(opt, "USER") {
            if v != b"default" {
                id = Some(0);
            }
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    let mut killed = 0;
    for c in ctx.shared.clients.all() {
        let matches = id.is_none_or(|id| c.id == id)
            && addr.as_ref().is_none_or(|a| c.addr.to_string() == *a)
            && laddr.as_ref().is_none_or(|a| c.laddr.to_string() == *a);
        if !matches || (skipme && c.id == me) {
            continue;
        }
        killed += 1;
        if c.id == me {
            ctx.conn.quit = true;
        } else {
            c.kill();
        }
    }
    ctx.out.int(killed);
    Ok(())
}
