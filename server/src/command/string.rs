//! String commands: GET, SET and its relatives, counters, ranges.
//!
//! Read-modify-write commands (INCR, APPEND, SETRANGE, SET NX/XX/GET...)
//! evaluate under the key's shard lock, so concurrent clients never lose an
//! update. Commands that rewrite a value keep its expiry unless Redis drops
//! it (SET without KEEPTTL, GETSET).

use std::sync::atomic::Ordering::Relaxed;

use ringcache_protocol::Args;

use super::{CmdError, CmdResult, Ctx, arg_f64, arg_i64, eq_ic};

pub fn get(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let out = &mut ctx.out;
    let hit = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        k.touch();
        out.bulk_opt(k.value());
        k.exists()
    });
    count(ctx, hit);
    Ok(())
}

#[inline]
fn count(ctx: &mut Ctx<'_>, hit: bool) {
    if hit {
        ctx.stats.hits += 1;
    } else {
        ctx.stats.misses += 1;
    }
}

/// The expiry option of SET or GETEX as written: which one, and its raw
/// number (validated only when it is used: GETEX checks it after finding
/// the key, as Redis does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryArg<'a> {
    None,
    /// EX, PX, EXAT or PXAT (index 0..4) with its argument.
    Timed(usize, &'a [u8]),
    Keep,
    Persist,
}

impl ExpiryArg<'_> {
    /// Absolute expiry in ms, or `InvalidExpire` for a bad number.
    fn at(self, now_ms: u64, cmd: &'static str) -> Result<Option<u64>, CmdError> {
        let ExpiryArg::Timed(kind, raw) = self else { return Ok(None) };
        let n = arg_i64(raw)?;
        let (unit, absolute) = [(1000, false), (1, false), (1000, true), (1, true)][kind];
        expiry_ms(n, unit, absolute, now_ms).map(Some).ok_or(CmdError::InvalidExpire(cmd))
    }

    fn same_kind(self, other: ExpiryArg<'_>) -> bool {
        match (self, other) {
            (ExpiryArg::Timed(a, _), ExpiryArg::Timed(b, _)) => a == b,
            (a, b) => std::mem::discriminant(&a) == std::mem::discriminant(&b),
        }
    }
}

/// Options shared by SET and GETEX.
struct SetOptions<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    expiry: ExpiryArg<'a>,
}

/// Absolute expiry in ms for `n` units given relative (`EX`/`PX`) or absolute
/// (`EXAT`/`PXAT`); `None` when the value is out of range.
fn expiry_ms(n: i64, unit_ms: i64, absolute: bool, now_ms: u64) -> Option<u64> {
    if n <= 0 {
        return None;
    }
    let ms = n.checked_mul(unit_ms)?;
    let at = if absolute { ms } else { ms.checked_add(i64::try_from(now_ms).ok()?)? };
    u64::try_from(at).ok()
}

/// Parses SET's (or GETEX's) options. An option may repeat (the last one
/// counts); options that contradict each other are a syntax error.
fn parse_set_options<'a>(args: Args<'a>, from: usize, getex: bool) -> Result<SetOptions<'a>, CmdError> {
    let mut o = SetOptions { nx: false, xx: false, get: false, expiry: ExpiryArg::None };
    let mut i = from;
    while i < args.len() {
        let a = args.get(i);
        let has_next = i + 1 < args.len();
        let timed = ["EX", "PX", "EXAT", "PXAT"].iter().position(|u| eq_ic(a, u));
        let mut expiry = |e: ExpiryArg<'a>| {
            if o.expiry == ExpiryArg::None || o.expiry.same_kind(e) {
                o.expiry = e;
                Ok(())
            } else {
                Err(CmdError::Syntax)
            }
        };
        if !getex && eq_ic(a, "NX") && !o.xx {
            o.nx = true;
        } else if !getex && eq_ic(a, "XX") && !o.nx {
            o.xx = true;
        } else if !getex && eq_ic(a, "GET") {
            o.get = true;
        } else if !getex && eq_ic(a, "KEEPTTL") {
            expiry(ExpiryArg::Keep)?;
        } else if getex && eq_ic(a, "PERSIST") {
            expiry(ExpiryArg::Persist)?;
        } else if let Some(u) = timed
            && has_next
        {
            expiry(ExpiryArg::Timed(u, args.get(i + 1)))?;
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    Ok(o)
}

pub fn set(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let o = parse_set_options(args, 3, false)?;
    let at = o.expiry.at(ctx.now_ms, "set")?;
    let (key, value) = (args.get(1), args.get(2));
    let now = ctx.now_ms;
    let out = &mut ctx.out;
    ctx.shared.store.with_key(key, now, |k| {
        let exists = k.exists();
        let apply = !((o.nx && exists) || (o.xx && !exists));
        if o.get {
            out.bulk_opt(k.value());
        } else if apply {
            out.ok();
        } else {
            out.null();
        }
        if apply {
            let expiry = if o.expiry == ExpiryArg::Keep { k.expiry_ms() } else { at };
            store_value(k, value, expiry, now);
        }
    });
    Ok(())
}

/// Sets a value, or deletes the key when its expiry is already past (what a
/// client observes either way: the key is gone).
fn store_value(k: &mut crate::store::KeyRef<'_>, value: &[u8], expiry: Option<u64>, now_ms: u64) {
    if expiry.is_some_and(|e| e <= now_ms) {
        k.remove();
    } else {
        k.set(value, expiry);
    }
}

pub fn setnx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let (key, value) = (args.get(1), args.get(2));
    let created = ctx.shared.store.with_key(key, ctx.now_ms, |k| {
        if k.exists() {
            return false;
        }
        k.set(value, None);
        true
    });
    ctx.out.int(i64::from(created));
    Ok(())
}

fn setex_generic(ctx: &mut Ctx<'_>, args: Args<'_>, unit_ms: i64, cmd: &'static str) -> CmdResult {
    let n = arg_i64(args.get(2))?;
    let at = expiry_ms(n, unit_ms, false, ctx.now_ms).ok_or(CmdError::InvalidExpire(cmd))?;
    ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| k.set(args.get(3), Some(at)));
    ctx.out.ok();
    Ok(())
}

pub fn setex(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, 1000, "setex")
}

pub fn psetex(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, 1, "psetex")
}

pub fn getset(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let out = &mut ctx.out;
    ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        out.bulk_opt(k.value());
        k.set(args.get(2), None);
    });
    Ok(())
}

pub fn getdel(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let out = &mut ctx.out;
    let hit = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        out.bulk_opt(k.value());
        k.delete().is_some()
    });
    count(ctx, hit);
    Ok(())
}

pub fn getex(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let o = parse_set_options(args, 2, true)?;
    let now = ctx.now_ms;
    let out = &mut ctx.out;
    let hit = ctx.shared.store.with_key(args.get(1), now, |k| {
        if !k.exists() {
            out.null();
            return Ok(false);
        }
        // Redis validates the expiry only once the key is found.
        let at = o.expiry.at(now, "getex")?;
        k.touch();
        out.bulk_opt(k.value());
        match (o.expiry, at) {
            (_, Some(at)) if at <= now => {
                k.remove();
            }
            (_, Some(at)) => {
                k.set_expiry(Some(at));
            }
            (ExpiryArg::Persist, _) => {
                k.set_expiry(None);
            }
            _ => {}
        }
        Ok(true)
    })?;
    count(ctx, hit);
    Ok(())
}

pub fn mget(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ctx.out.array(args.len() - 1);
    let (mut hits, mut misses) = (0, 0);
    for key in args.iter().skip(1) {
        let out = &mut ctx.out;
        ctx.shared.store.with_key(key, ctx.now_ms, |k| {
            k.touch();
            out.bulk_opt(k.value());
            if k.exists() { hits += 1 } else { misses += 1 }
        });
    }
    ctx.stats.hits += hits;
    ctx.stats.misses += misses;
    Ok(())
}

fn pairs_arity(args: Args<'_>, name: &str) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::Arity(name.to_string()));
    }
    Ok(())
}

pub fn mset(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    pairs_arity(args, "mset")?;
    let keys = (1..args.len()).step_by(2).map(|i| args.get(i));
    ctx.shared.store.with_keys(keys, ctx.now_ms, |m| {
        for i in (1..args.len()).step_by(2) {
            m.key(args.get(i)).set(args.get(i + 1), None);
        }
    });
    ctx.out.ok();
    Ok(())
}

pub fn msetnx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    pairs_arity(args, "msetnx")?;
    let keys = (1..args.len()).step_by(2).map(|i| args.get(i));
    let done = ctx.shared.store.with_keys(keys, ctx.now_ms, |m| {
        if (1..args.len()).step_by(2).any(|i| m.key(args.get(i)).exists()) {
            return false;
        }
        for i in (1..args.len()).step_by(2) {
            m.key(args.get(i)).set(args.get(i + 1), None);
        }
        true
    });
    ctx.out.int(i64::from(done));
    Ok(())
}

fn too_big() -> CmdError {
    CmdError::msg("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

pub fn append(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let max = ctx.shared.settings.proto_max_bulk_len.load(Relaxed);
    let add = args.get(2);
    let len = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        let old = k.value().unwrap_or_default();
        if (old.len() + add.len()) as u64 > max {
            return Err(too_big());
        }
        let mut v = Vec::with_capacity(old.len() + add.len());
        v.extend_from_slice(old);
        v.extend_from_slice(add);
        k.set_keep_ttl(&v);
        Ok(v.len())
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let len = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| k.value().map_or(0, <[u8]>::len));
    ctx.out.int(len as i64);
    Ok(())
}

pub fn getrange(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut start = arg_i64(args.get(2))?;
    let mut end = arg_i64(args.get(3))?;
    let out = &mut ctx.out;
    ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        let v = k.value().unwrap_or_default();
        let len = v.len() as i64;
        if (start < 0 && end < 0 && start > end) || len == 0 {
            out.bulk(b"");
            return;
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0).min(len - 1);
        if start > end {
            out.bulk(b"");
        } else {
            out.bulk(&v[start as usize..=end as usize]);
        }
    });
    Ok(())
}

pub fn setrange(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let offset = arg_i64(args.get(2))?;
    if offset < 0 {
        return Err(CmdError::msg("ERR offset is out of range"));
    }
    let offset = offset as u64;
    let piece = args.get(3);
    let max = ctx.shared.settings.proto_max_bulk_len.load(Relaxed);
    let len = ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        let old = k.value();
        if piece.is_empty() {
            return Ok(old.map_or(0, <[u8]>::len));
        }
        if offset + piece.len() as u64 > max {
            return Err(too_big());
        }
        let offset = offset as usize;
        let old = old.unwrap_or_default();
        let mut v = old.to_vec();
        if v.len() < offset + piece.len() {
            v.resize(offset + piece.len(), 0);
        }
        v[offset..offset + piece.len()].copy_from_slice(piece);
        k.set_keep_ttl(&v);
        Ok(v.len())
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

fn incr_generic(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> CmdResult {
    let n = ctx.shared.store.with_key(key, ctx.now_ms, |k| {
        let cur = match k.value() {
            Some(v) => ringcache_protocol::parse_i64(v).ok_or(CmdError::NotInteger)?,
            None => 0,
        };
        let n = cur.checked_add(by).ok_or(CmdError::Overflow)?;
        let mut text = bytes::BytesMut::with_capacity(20);
        ringcache_protocol::encode::put_decimal(&mut text, n);
        k.set_keep_ttl(&text);
        Ok(n)
    })?;
    ctx.out.int(n);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    incr_generic(ctx, args.get(1), 1)
}

pub fn decr(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    incr_generic(ctx, args.get(1), -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let by = arg_i64(args.get(2))?;
    incr_generic(ctx, args.get(1), by)
}

pub fn decrby(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let by = arg_i64(args.get(2))?;
    if by == i64::MIN {
        return Err(CmdError::msg("ERR decrement would overflow"));
    }
    incr_generic(ctx, args.get(1), -by)
}

/// Formats an INCRBYFLOAT result the way Redis does (`%.17Lf`, trailing
/// zeros removed, never an exponent) as far as f64 allows. Redis computes in
/// 80-bit `long double`, where 0.1 + 0.2 prints as 0.3; in f64 the same
/// needs rounding to 15 significant digits first, which is done for values
/// below 1e15. Larger values print their exact digits, as Redis does.
pub fn format_float(v: f64) -> String {
    let snapped: f64 = format!("{v:.14e}").parse().unwrap_or(v);
    let r = if snapped.is_finite() && v.abs() < 1e15 { snapped } else { v };
    let shortest = format!("{r}");
    let decimals = shortest.split_once('.').map_or(0, |(_, d)| d.len());
    let text = if v.abs() >= 1e15 || decimals > 17 { format!("{r:.17}") } else { shortest };
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    if text == "-0" { "0".to_string() } else { text }
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let by = arg_f64(args.get(2))?;
    let out = &mut ctx.out;
    ctx.shared.store.with_key(args.get(1), ctx.now_ms, |k| {
        let cur = match k.value() {
            Some(v) => arg_f64(v)?,
            None => 0.0,
        };
        let n = cur + by;
        if !n.is_finite() {
            return Err(CmdError::msg("ERR increment would produce NaN or Infinity"));
        }
        let text = format_float(n);
        k.set_keep_ttl(text.as_bytes());
        out.bulk(text.as_bytes());
        Ok(())
    })
}
