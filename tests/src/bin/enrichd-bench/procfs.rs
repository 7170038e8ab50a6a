//! What Linux's `/proc` says about this process, the PostgreSQL server's processes and the
//! machine's load.

/// A file's text, empty where it cannot be read.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A KiB field of `/proc/self/status` (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(field: &str) -> u64 {
    read("/proc/self/status")
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used by this process, or by every `postgres` process.
pub fn cpu_seconds(postgres: bool) -> f64 {
    let ticks = |stat: &str| -> u64 {
        // Fields after the `(comm)`: state is the first, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let total: u64 = if postgres {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .map(|e| read(&format!("{}/stat", e.path().display())))
            .filter(|st| st.contains("(postgres)"))
            .map(|st| ticks(&st))
            .sum()
    } else {
        ticks(&read("/proc/self/stat"))
    };
    // USER_HZ is 100 on Linux.
    total as f64 / 100.0
}

/// The 1, 5 and 15-minute load averages.
pub fn loadavg() -> String {
    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
