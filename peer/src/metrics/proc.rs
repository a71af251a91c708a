//! Parsers for the `/proc` files the heartbeat samples.

pub(super) fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CpuTimes {
    total: u64,
    idle: u64,
}

impl CpuTimes {
    pub(super) fn busy_pct_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let idle = self.idle.saturating_sub(earlier.idle);
        if total == 0 {
            return 0.0;
        }
        (total.saturating_sub(idle)) as f64 * 100.0 / total as f64
    }
}

/// The aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal.
pub(super) fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        total: v.iter().sum(),
        idle,
    })
}

/// utime + stime (clock ticks) from `/proc/self/stat`; the command name may contain spaces.
pub(super) fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is f[0]; utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(super) fn parse_memory_used_pct(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| (total - available) * 100.0 / total)
}

pub(super) fn parse_statm_rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let a = parse_cpu_times(stat).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        let b = CpuTimes {
            total: 1100,
            idle: 850,
        };
        assert!((b.busy_pct_since(a) - 50.0).abs() < 1e-9);
        let pstat = "1234 (sluice peer) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_process_ticks(pstat), Some(300));
        let meminfo = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_memory_used_pct(meminfo), Some(75.0));
        assert_eq!(parse_statm_rss_pages("5000 1200 300 1 0 900 0"), Some(1200));
    }
}
