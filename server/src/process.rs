//! Facts about this process: the wall clock, and from /proc (Linux)
//! resident memory and CPU time (elsewhere these read as 0 rather than
//! failing).

/// Unix time in ms: the one clock read of the request path (once a batch).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Ms on this process's monotonic clock since its first read: never
/// stepped by NTP, and meaningful only within this process (forward
/// deadlines pair it with the receiver's, see `cluster::protocol::Lateness`).
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// (user, system) CPU seconds used by this process.
pub fn cpu_seconds() -> (f64, f64) {
    // Fields 14 and 15 of /proc/self/stat, in USER_HZ ticks (100 on Linux).
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return (0.0, 0.0) };
    // The command name (field 2) may hold spaces; fields after ')' are plain.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return (0.0, 0.0) };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / TICKS_PER_SECOND;
    // After ')' the first field is field 3 (state): utime is field 14 → index 11.
    (tick(11), tick(12))
}

/// `1.50M`-style sizes as Redis prints them in INFO.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n < K {
        format!("{n}B")
    } else if n < K * K {
        format!("{:.2}K", n / K)
    } else if n < K * K * K {
        format!("{:.2}M", n / K / K)
    } else if n < K * K * K * K {
        format!("{:.2}G", n / K / K / K)
    } else {
        format!("{:.2}T", n / K / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes() > 0);
        }
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(10), "10B");
    }
}
