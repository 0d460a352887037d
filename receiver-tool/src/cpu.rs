//! CPU time of this process and of the machine, from /proc (I/O the core never does).

/// User + system CPU seconds of this process so far, from /proc/self/stat (clock ticks of
/// 1/100 s, the Linux default).
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Machine-wide softirq seconds so far, from the `cpu` line of /proc/stat (1/100 s).
pub fn softirq_seconds() -> f64 {
    // /proc/stat "cpu" line: user nice system idle iowait irq softirq ... (1/100 s).
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(7)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |t| t / 100.0)
}

/// The process's CPU plus the machine's softirq time: what `rx_cpu_seconds_per_gb`
/// counts (docs/design.md).
pub fn cpu_now() -> f64 {
    process_cpu_seconds() + softirq_seconds()
}
