//! Text output of `ward ctl`: the tree indented like pstree, with kind,
//! status, restarts and uptime per node (and what a node adds beside its
//! name, an endpoint's dialer), and stats as aligned lines.

use std::fmt::Write;

use ward_supervision::TreeNode;

use super::protocol::{DialerInfo, GroupInfo, Stats};

/// The tree as aligned text, one node per line.
pub fn tree(root: &TreeNode) -> String {
    let mut rows = Vec::new();
    collect(root, "", "", &mut rows);
    let name_width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let kind_width = rows
        .iter()
        .map(|(_, n)| n.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:name_width$}  {:kind_width$}  {:8}  {:>8}  {:>9}  ID",
        "NODE", "KIND", "STATUS", "RESTARTS", "UPTIME"
    );
    for (label, node) in rows {
        let pad = name_width - label.chars().count();
        let _ = write!(
            out,
            "{label}{:pad$}  {:kind_width$}  {:8}  {:>8}  {:>9}  {}",
            "",
            node.kind,
            node.status,
            node.restarts,
            uptime(node),
            node.id.as_deref().unwrap_or("-"),
        );
        if let Some(exit) = &node.last_exit {
            let _ = write!(out, "  (last exit: {exit})");
        }
        out.push('\n');
    }
    out
}

fn collect<'a>(
    node: &'a TreeNode,
    prefix: &str,
    child_prefix: &str,
    rows: &mut Vec<(String, &'a TreeNode)>,
) {
    let label = match &node.detail {
        Some(detail) => format!("{prefix}{} {detail}", node.name()),
        None => format!("{prefix}{}", node.name()),
    };
    rows.push((label, node));
    let count = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == count;
        let (branch, next) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        collect(
            child,
            &format!("{child_prefix}{branch}"),
            &format!("{child_prefix}{next}"),
            rows,
        );
    }
}

fn uptime(node: &TreeNode) -> String {
    if node.id.is_none() {
        return "-".to_string();
    }
    human_duration(node.uptime_ms)
}

/// `950ms`, `42s`, `3m07s`, `5h02m`, `2d03h`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Stats as `name: value` lines.
pub fn stats(stats: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "version:        {}", stats.version);
    let _ = writeln!(out, "config:         {}", stats.config);
    let _ = writeln!(out, "uptime:         {}", human_duration(stats.uptime_ms));
    let total: u64 = stats.actors.values().sum();
    let _ = writeln!(out, "actors:         {total}");
    for (kind, count) in &stats.actors {
        let _ = writeln!(out, "  {kind:20} {count}");
    }
    let _ = writeln!(out, "restarts:       {}", stats.restarts_total);
    let _ = writeln!(
        out,
        "open fds:       {} (limit {}/{})",
        stats.open_fds,
        stats.nofile().soft,
        stats.nofile().hard
    );
    let _ = writeln!(
        out,
        "rss:            {:.1} MiB",
        stats.rss_bytes as f64 / (1024.0 * 1024.0)
    );
    let _ = writeln!(out, "log suppressed: {}", stats.log_suppressed);
    let metrics = stats
        .metrics_addr
        .as_deref()
        .map_or("off".to_string(), |a| format!("http://{a}/metrics"));
    let _ = writeln!(out, "metrics:        {metrics}");
    if let Some(dns) = &stats.dns {
        let _ = writeln!(
            out,
            "dns answered:   {} ({} in flight)",
            dns.answered, dns.in_flight
        );
        let _ = writeln!(
            out,
            "dns cache:      {}/{} entries, {} hits, {} misses, {} stale",
            dns.cache_entries,
            dns.cache_capacity,
            dns.cache_hits,
            dns.cache_misses,
            dns.cache_stale
        );
        for (name, up) in &dns.upstreams {
            let state = if up.up { "up" } else { "DOWN" };
            let _ = writeln!(
                out,
                "  upstream {name:14} {state:4} {} answers, {} failures",
                up.answers, up.failures
            );
        }
    }
    if let Some(udp) = &stats.udp {
        let _ = writeln!(
            out,
            "udp endpoints:  {}/{} live, {} created, {} failovers, {} refused",
            udp.endpoints, udp.max_endpoints, udp.created, udp.failovers, udp.refused
        );
    }
    out
}

/// Dialers as a table, one line per dialer and track, then the groups.
pub fn dialers(dialers: &[DialerInfo], groups: &[GroupInfo]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}ms"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:16} {:11} {:5} {:5} {:>9} {:>9} {:>9} {:>5} {:>7}  last failure",
        "DIALER", "KIND", "TRACK", "STATE", "LAST", "AVG10", "MOVING", "FAILS", "TRAFFIC"
    );
    for d in dialers {
        for (label, t) in [("tcp", &d.tcp), ("udp", &d.udp)] {
            let failure = t.last_failure.as_ref().map_or(String::new(), |f| {
                format!(
                    "{} {} at {} ({}): {}",
                    f.source,
                    f.class,
                    f.stage,
                    ago(f.at_unix_ms),
                    f.reason
                )
            });
            let selected = if t.selected_by.is_empty() {
                String::new()
            } else {
                format!(" [selected by {}]", t.selected_by.join(", "))
            };
            let _ = writeln!(
                out,
                "{:16} {:11} {:5} {:5} {:>9} {:>9} {:>9} {:>5} {:>7}  {failure}{selected}",
                d.name,
                d.kind,
                label,
                if t.up { "up" } else { "DOWN" },
                ms(t.last_ms),
                ms(t.avg10_ms),
                ms(t.moving_avg_ms),
                t.consecutive_failures,
                t.traffic_failures,
            );
        }
    }
    for g in groups {
        let _ = writeln!(
            out,
            "group {}: {} of [{}], tcp -> {}, udp -> {}",
            g.name,
            g.policy,
            g.dialers.join(", "),
            g.tcp.as_deref().unwrap_or("-"),
            g.udp.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// How long ago a wall-clock time was.
fn ago(at_unix_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{} ago", human_duration(now.saturating_sub(at_unix_ms)))
}

/// What a reload did, a line per part that changed (kept ones counted).
pub fn reload(report: &serde_json::Value) -> String {
    let list = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = format!(
        "reloaded: configuration generation {}\n",
        report["generation"].as_u64().unwrap_or(0)
    );
    for key in ["added", "replaced", "removed"] {
        for part in list(key) {
            let _ = writeln!(out, "  {key:8} {part}");
        }
    }
    let kept = list("kept");
    let _ = writeln!(out, "  kept     {} unchanged", kept.len());
    for setting in list("needs_restart") {
        let _ = writeln!(out, "  not applied until restart: {setting}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, kind: &str, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            path: path.into(),
            kind: kind.into(),
            detail: None,
            id: Some("0.1".into()),
            status: "running".into(),
            restarts: 0,
            last_exit: None,
            last_exit_class: None,
            uptime_ms: 65_000,
            children,
        }
    }

    #[test]
    fn tree_is_indented_like_pstree() {
        let mut admin = node("admin", "admin", vec![]);
        admin.restarts = 1;
        admin.last_exit = Some("killed".into());
        let root = node(
            "",
            "supervisor",
            vec![
                admin,
                node(
                    "dns",
                    "supervisor",
                    vec![node("dns/upstreams", "supervisor", vec![])],
                ),
                node(
                    "udp/endpoints",
                    "supervisor",
                    vec![TreeNode {
                        detail: Some("via n1".into()),
                        ..node("udp/endpoints/10.0.0.2:5353#7", "udp-endpoint", vec![])
                    }],
                ),
            ],
        );
        let text = tree(&root);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE"));
        assert!(lines[1].starts_with("root "));
        assert!(lines[2].starts_with("├── admin "));
        assert!(
            lines[2].contains("  1  ") && lines[2].ends_with("(last exit: killed)"),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("├── dns "));
        assert!(lines[4].starts_with("│   └── upstreams "));
        assert!(lines[5].starts_with("└── endpoints "));
        assert!(
            lines[6].starts_with("    └── 10.0.0.2:5353#7 via n1  udp-endpoint "),
            "{}",
            lines[6]
        );
        assert!(lines[1].contains("1m05s"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(950), "950ms");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(187_000), "3m07s");
        assert_eq!(human_duration(18_120_000), "5h02m");
        assert_eq!(human_duration(183_600_000), "2d03h");
    }
}
