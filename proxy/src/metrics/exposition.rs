//! The exposition format a scraper asks for: OpenMetrics when its `Accept` names
//! `application/openmetrics-text` (Prometheus does, and gets exemplars and `# EOF`), else
//! the classic text format 0.0.4 (curl, older scrapers, `promtool check metrics`). The
//! registry writes OpenMetrics; the classic form is derived from it: counter families are
//! named with their `_total` suffix, `# UNIT`, `# EOF` and exemplars are left out.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut it = part.split(';');
            let ty = it.next().unwrap_or("").trim();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            ty.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
        })
    })
}

/// OpenMetrics text to the classic text format.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = &line[..7];
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
            } else if kind == "# TYPE " && (tail == "unknown" || tail == "info") {
                out.push_str(&format!("{kind}{name} untyped\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        // A sample: drop an exemplar (` # {labels} value [timestamp]`).
        let sample = match line.find(" # {") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_and_converts() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(None));
        let om = "# HELP membrane_requests Requests.\n# TYPE membrane_requests counter\nmembrane_requests_total{a=\"b\"} 3\n# HELP membrane_d Time.\n# TYPE membrane_d histogram\n# UNIT membrane_d seconds\nmembrane_d_bucket{le=\"+Inf\"} 1 # {trace_id=\"ab\"} 0.5\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP membrane_requests_total Requests.\n# TYPE membrane_requests_total counter\nmembrane_requests_total{a=\"b\"} 3\n# HELP membrane_d Time.\n# TYPE membrane_d histogram\nmembrane_d_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
