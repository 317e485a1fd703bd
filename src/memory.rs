//! How much memory the process uses: the bytes it holds on its heap (what the memory
//! limiter and `sieve_process_heap_bytes` measure), its resident set, and what is
//! available to it.

/// The bytes sieve holds on its heap now: jemalloc's `stats.allocated`, read after
/// advancing its statistics epoch. Pages the allocator keeps for reuse are not counted.
pub fn held_bytes() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|bytes| bytes as u64)
}

/// The process's resident set size.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The cgroup v2 memory limit if one is set, else total RAM.
pub fn available_memory_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kib_field(&m, "MemTotal:"));
    cgroup.or(total).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_and_available_memory() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(available_memory_bytes() > 0);
    }

    /// Other tests in this process allocate and free too: a measurement they disturb
    /// is taken again, a few times.
    #[test]
    fn held_bytes_follow_allocations_and_frees() {
        let measure = || {
            let before = held_bytes().unwrap();
            let block = vec![1u8; 256 << 20];
            let during = held_bytes().unwrap();
            drop(block);
            let after = held_bytes().unwrap();
            (before, during, after)
        };
        let near = |a: u64, b: u64| a.abs_diff(b) < 32 << 20;
        let attempts: Vec<_> = (0..5).map(|_| measure()).collect();
        assert!(
            attempts.iter().any(|&(before, during, after)| near(
                during.saturating_sub(before),
                256 << 20
            ) && near(
                during.saturating_sub(after),
                256 << 20
            )),
            "{attempts:?}"
        );
    }
}
