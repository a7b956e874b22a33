//! What the generator reads about processes: CPU time and resident memory
//! from /proc, and the open-files limit.

use std::time::Instant;

/// CPU time (user + system) of a process, in seconds, from /proc/PID/stat.
/// `None` where /proc is missing or the process is gone.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15, counting from 1.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// A CPU-time reading of the generator itself and, optionally, the server,
/// to turn into "% of one core" over a window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    own: Option<f64>,
    server: Option<f64>,
}

impl CpuSample {
    pub(crate) fn take(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            own: cpu_seconds(None),
            server: server_pid.and_then(|pid| cpu_seconds(Some(pid))),
        }
    }

    /// CPU use between `self` and `later` as percent of one core:
    /// (generator, server).
    pub(crate) fn percent_until(&self, later: &Self) -> (Option<f64>, Option<f64>) {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        (percent(self.own, later.own, wall), percent(self.server, later.server, wall))
    }
}

/// CPU seconds `from` → `to` over `wall` seconds, as percent of one core.
fn percent(from: Option<f64>, to: Option<f64>, wall: f64) -> Option<f64> {
    match (from, to) {
        (Some(a), Some(b)) if wall > 0.0 => Some(round1((b - a) / wall * 100.0)),
        _ => None,
    }
}

/// CPU time of several processes (the other nodes, the broker) at one instant, to turn
/// into "% of one core" each over a window.
#[derive(Debug, Clone)]
pub(crate) struct CpuOf {
    at: Instant,
    seconds: Vec<Option<f64>>,
}

impl CpuOf {
    pub(crate) fn take(pids: &[u32]) -> Self {
        Self { at: Instant::now(), seconds: pids.iter().map(|&pid| cpu_seconds(Some(pid))).collect() }
    }

    /// Each process's CPU use between `self` and `later`, as percent of one core.
    pub(crate) fn percent_until(&self, later: &Self) -> Vec<Option<f64>> {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        self.seconds.iter().zip(&later.seconds).map(|(&a, &b)| percent(a, b, wall)).collect()
    }
}

/// Resident memory (VmRSS) of a process in bytes, from /proc/PID/status.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises the soft open-files limit to the hard limit; returns the limit now
/// in force (`None` when unlimited or unknown).
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_figures() {
        assert!(cpu_seconds(None).is_some());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(raise_nofile_limit().unwrap_or(u64::MAX) > 0);
    }
}
