//! What the end-to-end benches (`elasticsearch`, `journald`) share: their command line and the
//! figures of the agent's process.

/// The scenario names given after `--` (`cargo bench --bench NAME -- SCENARIO...`); `None` when
/// cargo only lists the benches (`--list`), which runs nothing.
pub fn scenario_args() -> Option<Vec<String>> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    Some(
        std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect(),
    )
}

/// CPU seconds (user and system) and peak RSS (KiB, VmHWM) of process `pid`, from /proc.
pub fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some((ticks / 100.0, hwm))
}
