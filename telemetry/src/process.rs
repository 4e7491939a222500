//! `membrane_build_info` and the standard `process_*` series (CPU, memory, file
//! descriptors, start time), read from `/proc/self` at scrape, for the gateway's and the
//! control server's `/metrics` alike. Written as exposition text because their values are
//! read, not counted. On a system without `/proc` only `membrane_build_info` is written.

use std::fmt::Write;

/// Appends the series to `out`: OpenMetrics text (before its `# EOF`), or the classic text
/// format with `classic` (a counter's family named with its `_total`).
pub fn write(out: &mut String, classic: bool) {
    let _ = writeln!(
        out,
        "# HELP membrane_build_info Membrane's version, as a label (the value is 1)"
    );
    let _ = writeln!(out, "# TYPE membrane_build_info gauge");
    let _ = writeln!(
        out,
        "membrane_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let Some(p) = read() else { return };
    let series: [(&str, &str, &str, f64); 6] = [
        (
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes",
            p.virtual_bytes,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors",
            p.max_fds,
        ),
    ];
    for (name, kind, help, v) in series {
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        let family = if classic { sample.as_str() } else { name };
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        let _ = writeln!(out, "{sample} {v}");
    }
}

struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time: f64,
    open_fds: f64,
    max_fds: f64,
}

/// Clock ticks per second and page size: Linux's values on the platforms Membrane is
/// built for (`getconf CLK_TCK` is 100 and pages are 4 KiB on x86-64 and arm64 Linux).
const TICKS: f64 = 100.0;
const PAGE: f64 = 4096.0;

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Numbered from field 3 (state) as f[0]: utime 14, stime 15, starttime 22, vsize 23,
    // rss 24 (man 5 proc).
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(Process {
        cpu_seconds: (num(14)? + num(15)?) / TICKS,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * PAGE,
        start_time: boot + num(22)? / TICKS,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        super::write(&mut out, false);
        let mut classic = String::new();
        super::write(&mut classic, true);
        assert!(
            !std::path::Path::new("/proc/self/stat").exists()
                || classic.contains("# TYPE process_cpu_seconds_total counter"),
            "{classic}"
        );
        assert!(out.contains("membrane_build_info{version=\""), "{out}");
        if std::path::Path::new("/proc/self/stat").exists() {
            let rss = out
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .and_then(|v| v.parse::<f64>().ok())
                .expect("rss");
            assert!(rss > 1_000_000.0, "{out}");
            assert!(out.contains("process_cpu_seconds_total "), "{out}");
        }
    }
}
