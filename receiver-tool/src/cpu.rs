//! CPU time of this process, its threads and the machine, from /proc (I/O the core never
//! does), in clock ticks converted with the kernel's `CLK_TCK` (`sysconf`), not an assumed
//! 100.

use std::collections::BTreeMap;

use receive_core::report::AccountingReport;

/// Clock ticks per second, read once.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(umem::clock_ticks_per_second)
}

/// The same, for dividing.
fn ticks_per_second() -> f64 {
    clock_ticks() as f64
}

/// user + system ticks from a /proc/…/stat line (fields 14 and 15), and its command name.
fn stat_ticks(stat: &str) -> Option<(String, f64)> {
    // The command name is in parentheses and may contain spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    Some((name, tick(11)? + tick(12)?))
}

/// User + system CPU seconds of this process so far.
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0.0, |(_, t)| t / ticks_per_second())
}

/// The machine's CPU seconds by category so far, all cores: the `cpu` line of /proc/stat.
fn machine_seconds() -> BTreeMap<&'static str, f64> {
    const NAMES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return BTreeMap::new();
    };
    let Some(line) = stat.lines().next() else {
        return BTreeMap::new();
    };
    NAMES
        .iter()
        .zip(line.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((*n, v.parse::<f64>().ok()? / ticks_per_second())))
        .collect()
}

/// CPU seconds per thread name of this process (threads of one name summed).
fn thread_seconds() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).ok();
        if let Some((name, ticks)) = stat.as_deref().and_then(stat_ticks) {
            *out.entry(name).or_insert(0.0) += ticks / ticks_per_second();
        }
    }
    out
}

/// The process's CPU plus the machine's softirq time: what `rx_cpu_seconds_per_gb`
/// counts (docs/design.md).
pub fn cpu_now() -> f64 {
    process_cpu_seconds() + machine_seconds().get("softirq").copied().unwrap_or(0.0)
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    process: f64,
    threads: BTreeMap<String, f64>,
    machine: BTreeMap<&'static str, f64>,
    at: std::time::Instant,
}

impl CpuSnapshot {
    /// Wall seconds from `earlier` to this snapshot.
    pub fn seconds_since(&self, earlier: &Self) -> f64 {
        self.at.duration_since(earlier.at).as_secs_f64()
    }

    /// Now.
    pub fn take() -> Self {
        Self {
            process: process_cpu_seconds(),
            threads: thread_seconds(),
            machine: machine_seconds(),
            at: std::time::Instant::now(),
        }
    }
}

/// The busy-polling loop's own counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopCounts {
    /// Loop turns.
    pub turns: u64,
    /// Turns in which no descriptor came back.
    pub empty_polls: u64,
    /// Descriptors handled.
    pub packets: u64,
    /// Time spent in turns that handled descriptors.
    pub useful: std::time::Duration,
}

/// What the run cost from `start` to `end`, and how the receive loop spent its turns.
pub fn accounting(
    start: &CpuSnapshot,
    end: &CpuSnapshot,
    counts: LoopCounts,
    payload_bytes: u64,
    run_seconds: f64,
) -> AccountingReport {
    let threads = end
        .threads
        .iter()
        .map(|(name, t)| {
            let before = start.threads.get(name).copied().unwrap_or(0.0);
            (name.clone(), (t - before).max(0.0))
        })
        .collect();
    let machine = end
        .machine
        .iter()
        .map(|(name, t)| {
            let before = start.machine.get(name).copied().unwrap_or(0.0);
            (*name, (t - before).max(0.0))
        })
        .collect();
    let per_packet = |d: std::time::Duration| {
        if counts.packets == 0 {
            0.0
        } else {
            d.as_nanos() as f64 / counts.packets as f64
        }
    };
    AccountingReport {
        clock_ticks_per_second: clock_ticks(),
        seconds: end.at.duration_since(start.at).as_secs_f64(),
        process_cpu_seconds: (end.process - start.process).max(0.0),
        thread_cpu_seconds: threads,
        machine_cpu_seconds: machine,
        loop_turns: counts.turns,
        empty_polls: counts.empty_polls,
        useful_ns_per_packet: per_packet(counts.useful),
        packets_per_busy_turn: {
            let busy = counts.turns.saturating_sub(counts.empty_polls);
            if busy == 0 {
                0.0
            } else {
                counts.packets as f64 / busy as f64
            }
        },
        whole_run_gbit_per_s: if run_seconds > 0.0 {
            payload_bytes as f64 * 8.0 / 1e9 / run_seconds
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "42 (zc-recv dig) S 1 2 3 4 5 6 7 8 9 10 70 30 0 0";
        assert_eq!(stat_ticks(line), Some(("zc-recv dig".to_string(), 100.0)));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_and_its_threads_are_measured() {
        assert!(ticks_per_second() >= 1.0);
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let threads = thread_seconds();
        assert!(
            threads.values().sum::<f64>() >= 0.02,
            "50 ms of spinning: {threads:?}"
        );
        assert!(machine_seconds().contains_key("softirq"));
    }
}
