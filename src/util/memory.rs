//! Up-front memory checks for allocations whose size comes from input (a tensor shape in a file header, a
//! number of scenes on the command line): refuse with a message naming what asked for it, rather than
//! letting the allocator abort or the OOM killer end the process half-way.
use crate::util::progress::human_bytes;

#[derive(Debug, thiserror::Error)]
#[error(
    "{what} needs about {} of memory but {} is available{hint}",
    human_bytes(*needed as f64),
    human_bytes(*available as f64)
)]
pub struct MemoryError {
    pub what: String,
    pub needed: u64,
    pub available: u64,
    pub hint: String,
}

/// Bytes this process can still allocate: `MemAvailable` of `/proc/meminfo`, lowered to the cgroup's
/// remaining allowance when there is a limit; `CONTRACAM_MEMORY_LIMIT` (bytes) overrides both. `None` when
/// none of them can be read (then no check is made).
pub fn available_bytes() -> Option<u64> {
    if let Some(v) = std::env::var("CONTRACAM_MEMORY_LIMIT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        return Some(v);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    // cgroup v2: "max" does not parse and means no limit.
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => None,
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Refuses `needed` bytes when more than the available memory.
pub fn ensure_fits(needed: u64, what: &str) -> Result<(), MemoryError> {
    ensure_fits_with_hint(needed, what, "")
}

/// As [`ensure_fits`], with a hint (", use --chunk 64", ...) appended to the message.
pub fn ensure_fits_with_hint(needed: u64, what: &str, hint: &str) -> Result<(), MemoryError> {
    match available_bytes() {
        Some(available) if needed > available => Err(MemoryError {
            what: what.into(),
            needed,
            available,
            hint: hint.into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn petabytes_are_refused_and_small_amounts_pass() {
        let e = ensure_fits(1 << 50, "a test tensor").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("a test tensor needs about 1024.0 TiB of memory but"),
            "{msg}"
        );
        ensure_fits(1 << 10, "a kilobyte").unwrap();
        assert!(available_bytes().is_some(), "Linux exposes MemAvailable");
    }
}
