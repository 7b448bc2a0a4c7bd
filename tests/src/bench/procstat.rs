//! Memory and CPU of a process, from `/proc`.
//!
//! The worker's footprint is a headline figure (10,000 in-flight jobs in ≤ 150 MB), and
//! the CPU split between worker, nats-server, mock and producer tells where a 2-core
//! machine's time goes; so every process of a run is its own process and is measured
//! here: resident set (`VmRSS`), its peak (`VmHWM`, reset per run through
//! `/proc/<pid>/clear_refs`) and CPU time (`utime + stime` from `/proc/<pid>/stat`,
//! in clock ticks).

use std::time::Instant;

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let at = Instant::now();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        at,
        cpu_ticks: cpu_ticks(&stat)?,
        rss_kib: status_kib(&status, "VmRSS:")?,
        hwm_kib: status_kib(&status, "VmHWM:")?,
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS; false if the kernel
/// refused (then the peak is the peak since the process started).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on every Linux we know of).
pub fn clock_ticks_per_sec() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A named process to measure.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl Watched {
    pub fn new(name: impl Into<String>, pid: u32) -> Self {
        Self {
            name: name.into(),
            pid,
        }
    }

    /// This process (the producer side of every scenario).
    pub fn this_process() -> Self {
        Self::new("bench (producer)", std::process::id())
    }
}

/// Usage of one process over a measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUsage {
    pub name: String,
    /// CPU seconds per wall second: 1.0 is one core busy all the time.
    pub cores: f64,
    pub rss_end_mib: f64,
    /// Peak RSS within the window (since the process started if the reset was refused).
    pub rss_peak_mib: f64,
    pub peak_since_start: bool,
}

/// A measuring window over several processes: [`start`](Self::start) resets their peaks
/// and reads them, [`finish`](Self::finish) reads them again.
#[derive(Debug)]
pub struct Meter {
    start: Vec<(Watched, Option<ProcSample>, bool)>,
}

impl Meter {
    pub fn start(processes: &[Watched]) -> Meter {
        let start = processes
            .iter()
            .map(|p| {
                let reset = reset_peak(p.pid);
                (p.clone(), sample(p.pid), reset)
            })
            .collect();
        Meter { start }
    }

    pub fn finish(&self) -> Vec<ProcUsage> {
        let tck = clock_ticks_per_sec() as f64;
        self.start
            .iter()
            .filter_map(|(proc, before, reset)| {
                let before = (*before)?;
                let after = sample(proc.pid)?;
                let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
                let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / tck;
                Some(ProcUsage {
                    name: proc.name.clone(),
                    cores: cpu / wall,
                    rss_end_mib: after.rss_kib as f64 / 1024.0,
                    rss_peak_mib: after.hwm_kib as f64 / 1024.0,
                    peak_since_start: !reset,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_command_name_holding_spaces_and_parens() {
        let stat = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 10 1000 200";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_sizes() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id()).expect("/proc/self readable");
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        let meter = Meter::start(&[Watched::this_process()]);
        let usage = meter.finish();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].cores >= 0.0 && usage[0].rss_peak_mib > 0.0);
    }
}
