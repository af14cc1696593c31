//! Eviction policies and the per-entry `access` field they read.
//!
//! LRU keeps a coarse clock (4 ms units, wrapping u32: ~198 days, like
//! Redis's 24-bit seconds clock) of the last access. LFU keeps Redis's scheme: the high 16 bits hold the last
//! decay time in minutes, the low 8 bits a logarithmic access counter that
//! starts at 5, grows with probability 1/((counter-5)*log_factor+1) and loses
//! one per `decay_time` minutes idle. Victims are chosen by sampling, as
//! Redis does ("approximated LRU/LFU").

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Policy {
    #[default]
    NoEviction = 0,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::AllKeysLfu => "allkeys-lfu",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn from_u8(n: u8) -> Policy {
        Policy::ALL.get(usize::from(n)).copied().unwrap_or_default()
    }

    /// Only keys with an expiry may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(self, Policy::VolatileLru | Policy::VolatileLfu | Policy::VolatileRandom | Policy::VolatileTtl)
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown maxmemory-policy '{s}'"))
    }
}

/// Initial LFU counter of a new key (Redis's LFU_INIT_VAL).
pub const LFU_INIT: u8 = 5;

/// The LRU clock at `now_ms`.
#[inline]
pub fn lru_clock(now_ms: u64) -> u32 {
    (now_ms >> 2) as u32
}

/// How long (in ms) an entry with LRU field `access` has been idle.
#[inline]
pub fn lru_idle_ms(access: u32, now_ms: u64) -> u64 {
    u64::from(lru_clock(now_ms).wrapping_sub(access)) << 2
}

#[inline]
fn minutes(now_ms: u64) -> u16 {
    (now_ms / 60_000) as u16
}

/// An LFU field for a new key.
#[inline]
pub fn lfu_new(now_ms: u64) -> u32 {
    (u32::from(minutes(now_ms)) << 16) | u32::from(LFU_INIT)
}

/// The counter of an LFU field after decay, without recording an access.
#[inline]
pub fn lfu_count(access: u32, now_ms: u64, decay_minutes: u32) -> u8 {
    let counter = (access & 0xff) as u8;
    if decay_minutes == 0 {
        return counter;
    }
    let last = (access >> 16) as u16;
    let elapsed = u32::from(minutes(now_ms).wrapping_sub(last));
    let periods = elapsed / decay_minutes;
    counter.saturating_sub(periods.min(255) as u8)
}

/// The LFU field after one access; `random` is a uniform u64.
#[inline]
pub fn lfu_touch(access: u32, now_ms: u64, decay_minutes: u32, log_factor: u32, random: u64) -> u32 {
    let mut counter = lfu_count(access, now_ms, decay_minutes);
    if counter < 255 {
        let base = f64::from(counter.saturating_sub(LFU_INIT));
        let p = 1.0 / (base * f64::from(log_factor) + 1.0);
        let r = (random >> 11) as f64 / (1u64 << 53) as f64;
        if r < p {
            counter += 1;
        }
    }
    (u32::from(minutes(now_ms)) << 16) | u32::from(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert!("lru".parse::<Policy>().is_err());
    }

    #[test]
    fn lfu_grows_and_decays() {
        let mut a = lfu_new(0);
        for i in 0..1000u64 {
            a = lfu_touch(a, 0, 1, 10, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let hot = lfu_count(a, 0, 1);
        assert!(hot > LFU_INIT, "counter {hot}");
        assert_eq!(lfu_count(a, 3 * 60_000, 1), hot - 3);
    }

    #[test]
    fn lru_idle() {
        let a = lru_clock(1_000);
        assert_eq!(lru_idle_ms(a, 1_000), 0);
        assert!(lru_idle_ms(a, 61_000) >= 59_000);
    }
}
