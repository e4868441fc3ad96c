//! Samples a process's memory and CPU from /proc (Linux): RSS, peak RSS, threads and
//! user+system CPU time, so a phase's cost is `after - before`.

use serde::{Deserialize, Serialize};

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
    /// User + system CPU, seconds.
    pub cpu_s: f64,
    /// When, seconds since the generator started.
    pub at_s: f64,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`; `None` if the process is gone.
pub fn sample(pid: u32, at_s: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start at `state` (field 3).
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_s: ticks as f64 / TICKS_PER_SEC,
        at_s,
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at_s - a.at_s;
    if wall <= 0.0 {
        return 0.0;
    }
    100.0 * (b.cpu_s - a.cpu_s) / wall
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_self() {
        let s = super::sample(std::process::id(), 0.0).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1);
    }
}
