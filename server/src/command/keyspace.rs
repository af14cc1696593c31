//! Keyspace commands: DEL, EXISTS, TYPE, expiry, KEYS, SCAN, RENAME, COPY.

use ringcache_protocol::Args;

use super::{CmdError, CmdResult, Ctx, arg_i64, eq_ic};

pub fn del(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut n = 0;
    for key in args.iter().skip(1) {
        if ctx.shared.store.with_key(key, ctx.now_ms, |k| k.delete()).is_some() {
            n += 1;
        }
    }
    ctx.out.int(n);
    Ok(())
}

pub fn exists(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let n = args.iter().skip(1).filter(|key| ctx.shared.store.with_key(key, ctx.now_ms, |k| k.exists())).count();
    ctx.out.int(n as i64);
    Ok(())
}

pub fn touch(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let n = args
        .iter()
        .skip(1)
        .filter(|key| {
            ctx.shared.store.with_key(key, ctx.now_ms, |k| {
                k.touch();
                k.exists()
            })
        })
        .count();
    ctx.out.int(n as i64);
    Ok(())
}

pub fn type_(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let exists = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| k.exists());
    ctx.out.simple(if exists { "string" } else { "none" });
    Ok(())
}

#[derive(Default)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn expire_generic(ctx: &mut Ctx<'_>, args: Args<'_>, unit_ms: i64, absolute: bool, cmd: &'static str) -> CmdResult {
    // Options are checked before the number, as Redis does.
    let mut f = ExpireFlags::default();
    for a in args.iter().skip(3) {
        if eq_ic(a, "NX") {
            f.nx = true;
        } else if eq_ic(a, "XX") {
            f.xx = true;
        } else if eq_ic(a, "GT") {
            f.gt = true;
        } else if eq_ic(a, "LT") {
            f.lt = true;
        } else {
            return Err(CmdError::msg(format!("ERR Unsupported option {}", String::from_utf8_lossy(a))));
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        return Err(CmdError::msg("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if f.gt && f.lt {
        return Err(CmdError::msg("ERR GT and LT options at the same time are not compatible"));
    }
    let n = arg_i64(args.get(2))?;
    let now = ctx.now_ms as i64;
    let at = n
        .checked_mul(unit_ms)
        .and_then(|ms| if absolute { Some(ms) } else { ms.checked_add(now) })
        .ok_or(CmdError::InvalidExpire(cmd))?;
    let changed = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        if !k.exists() {
            return false;
        }
        // No expiry counts as an infinite one for GT and LT.
        let current = k.expiry_ms().map(|e| e as i64);
        if (f.nx && current.is_some())
            || (f.xx && current.is_none())
            || (f.gt && current.is_none_or(|c| at <= c))
            || (f.lt && current.is_some_and(|c| at >= c))
        {
            return false;
        }
        if at <= now {
            k.remove();
        } else {
            k.set_expiry(Some(at as u64));
        }
        true
    });
    ctx.out.int(i64::from(changed));
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, false, "expire")
}
pub fn pexpire(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, false, "pexpire")
}
pub fn expireat(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, true, "expireat")
}
pub fn pexpireat(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, true, "pexpireat")
}

/// -2: no key; -1: no expiry; else what `f` makes of the expiry.
fn ttl_generic(ctx: &mut Ctx<'_>, args: Args<'_>, f: impl FnOnce(u64, u64) -> i64) -> CmdResult {
    let state = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| (k.exists(), k.expiry_ms()));
    let n = match state {
        (false, _) => -2,
        (true, None) => -1,
        (true, Some(at)) => f(at, ctx.now_ms),
    };
    ctx.out.int(n);
    Ok(())
}

pub fn ttl(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| (at.saturating_sub(now) as i64 + 500) / 1000)
}
pub fn pttl(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| at.saturating_sub(now) as i64)
}
pub fn expiretime(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| ((at + 500) / 1000) as i64)
}
pub fn pexpiretime(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| at as i64)
}

pub fn persist(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let changed = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| k.expiry_ms().is_some() && k.set_expiry(None));
    ctx.out.int(i64::from(changed));
    Ok(())
}

pub fn keys(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let keys = match ctx.conn.slot_filter(ctx.shared) {
        Some(t) => ctx.shared.store.keys_where(args.get(1), ctx.now_ms, |s| t.table.owners(s).first() == Some(&t.me)),
        None => ctx.shared.store.keys(args.get(1), ctx.now_ms),
    };
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
    Ok(())
}

pub fn scan(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    // Redis reads the cursor with strtoull: an empty string is 0.
    let raw = args.get(1);
    let cursor: u64 = if raw.is_empty() {
        0
    } else {
        std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()).ok_or_else(|| CmdError::msg("ERR invalid cursor"))?
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut type_ok = true;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if i + 1 >= args.len() {
            return Err(CmdError::Syntax);
        }
        let v = args.get(i + 1);
        if eq_ic(a, "MATCH") {
            pattern = Some(v).filter(|p| *p != b"*");
        } else if eq_ic(a, "COUNT") {
            let n = arg_i64(v)?;
            if n < 1 {
                return Err(CmdError::Syntax);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20);
        } else if eq_ic(a, "TYPE") {
            type_ok = eq_ic(v, "string");
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    let (next, mut keys) = match ctx.conn.slot_filter(ctx.shared) {
        Some(t) => ctx.shared.store.scan_where(cursor, count, ctx.now_ms, |s| t.table.owners(s).first() == Some(&t.me)),
        None => ctx.shared.store.scan(cursor, count, ctx.now_ms),
    };
    if !type_ok {
        keys.clear();
    }
    if let Some(p) = pattern {
        keys.retain(|k| crate::store::glob::glob_match(p, k, false));
    }
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
    Ok(())
}

pub fn randomkey(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let key = ctx.shared.store.random_key(ctx.now_ms);
    ctx.out.bulk_opt(key.as_deref());
    Ok(())
}

/// Moves `src` to `dst` (keeping the expiry). With `nx`, only if `dst` does
/// not exist. Returns whether it moved.
fn rename_generic(ctx: &mut Ctx<'_>, args: Args<'_>, nx: bool) -> Result<bool, CmdError> {
    let (src, dst) = (args.get(1), args.get(2));
    ctx.shared.store.with_keys([src, dst], ctx.now_ms, |m| {
        if !m.key(src).exists() {
            return Err(CmdError::NoSuchKey);
        }
        if src == dst {
            return Ok(!nx);
        }
        if nx && m.key(dst).exists() {
            return Ok(false);
        }
        let entry = m.key(src).remove().expect("checked above");
        m.key(dst).put_entry_from(&entry, entry.expiry_ms());
        Ok(true)
    })
}

pub fn rename(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)?;
    ctx.out.ok();
    Ok(())
}

pub fn renamenx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let moved = rename_generic(ctx, args, true)?;
    ctx.out.int(i64::from(moved));
    Ok(())
}

pub fn copy(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        if eq_ic(a, "REPLACE") {
            replace = true;
        } else if eq_ic(a, "DB") && i + 1 < args.len() {
            if arg_i64(args.get(i + 1))? != 0 {
                return Err(CmdError::msg("ERR DB index is out of range"));
            }
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if src == dst {
        return Err(CmdError::msg("ERR source and destination objects are the same"));
    }
    let copied = ctx.shared.store.with_keys([src, dst], ctx.now_ms, |m| {
        if !replace && m.key(dst).exists() {
            return false;
        }
        let Some((value, expiry)) = m.key(src).entry().map(|e| (e.value().to_vec(), e.expiry_ms())) else {
            return false;
        };
        m.key(dst).set(&value, expiry);
        true
    });
    ctx.out.int(i64::from(copied));
    Ok(())
}
