//! The benchmark's output: the tables it prints and the JSON it writes.

use crate::runs::Run;
use serde_json::json;

pub fn run_json(r: &Run) -> serde_json::Value {
    let mut v = json!({
        "scenario": r.scenario, "mode": r.mode, "nodes": r.nodes,
        "floor_s": r.floor_s, "floor_download_s": r.floor_download_s,
        "floor_decode_min_s": r.floor_decode_s, "floor_decode_view_s": r.floor_view_s,
        "ready_s": r.ready_s, "ready_cpu_s": r.ready_cpu_s,
        "rss_ready_mib": r.rss_ready_mib, "rss_steady_mib": r.rss_steady_mib,
        "hwm_steady_mib": r.hwm_steady_mib, "rss_after_scrapes_mib": r.rss_after_scrapes_mib,
        "rss_end_mib": r.rss_end_mib, "hwm_end_mib": r.hwm_end_mib,
        "scrape_p50_ms": r.scrape_p50_ms, "scrape_p99_ms": r.scrape_p99_ms,
        "scrape_max_ms": r.scrape_max_ms, "scrape_cpu_ms": r.scrape_cpu_ms,
        "render_ms": r.render_ms, "render_cpu_ms": r.render_cpu_ms,
        "body_kib": r.body_kib, "gzip_kib": r.gzip_kib, "series": r.series, "wanted_images": r.wanted_seen,
        "update_p50_ms": r.update_p50_ms, "update_max_ms": r.update_max_ms,
        "event_in_store_p50_ms": r.store_p50_ms, "event_in_store_max_ms": r.store_max_ms,
        "list_mb": r.list_mb, "bytes_per_hour_mb": r.bytes_per_hour_mb,
        "churn_updates": r.churn_updates, "churn_window_s": r.churn_window_s,
        "churn_cpu_pct": r.churn_cpu_pct,
        "churn_visible_p50_ms": r.churn_visible_p50_ms, "churn_visible_p99_ms": r.churn_visible_p99_ms,
        "churn_probes": r.churn_probes,
        "churn_rss_early_mib": r.churn_rss_early_mib, "churn_rss_late_mib": r.churn_rss_late_mib,
        "churn_interned_early": r.churn_interned_early, "churn_interned_late": r.churn_interned_late,
    });
    v["rss_steady_file_mib"] = json!(r.rss_steady_file_mib);
    v["rss_steady_anon_mib"] = json!(r.rss_steady_anon_mib);
    v["scrape_cost"] = crate::scrape_cost::json(r.one_node.as_ref(), r.paced.as_ref());
    v
}

pub fn print_tables(runs: &[Run], quick: bool) {
    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {}", r.scenario, r.mode))
        .collect();
    let width = header.iter().map(|h| h.len()).max().unwrap_or(0).max(10);
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "time to ready (s)",
            runs.iter().map(|r| format!("{:.2}", r.ready_s)).collect(),
        ),
        (
            "decode floor (s)",
            runs.iter().map(|r| format!("{:.2}", r.floor_s)).collect(),
        ),
        (
            "  floor: download (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_download_s))
                .collect(),
        ),
        (
            "  floor: decode (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_decode_s))
                .collect(),
        ),
        (
            "  (decode NodeView (s))",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_view_s))
                .collect(),
        ),
        (
            "ready / floor",
            runs.iter()
                .map(|r| format!("{:.2}x", r.ready_s / r.floor_s))
                .collect(),
        ),
        (
            "CPU to ready (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.ready_cpu_s))
                .collect(),
        ),
        (
            "RSS at ready (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_ready_mib))
                .collect(),
        ),
        (
            "steady RSS (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_steady_mib))
                .collect(),
        ),
        (
            "  of it mapped files / anon",
            runs.iter()
                .map(|r| format!("{:.1}/{:.1}", r.rss_steady_file_mib, r.rss_steady_anon_mib))
                .collect(),
        ),
        (
            "RSS after scrapes (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_after_scrapes_mib))
                .collect(),
        ),
        (
            "RSS at end (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_end_mib))
                .collect(),
        ),
        (
            "peak RSS (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.hwm_end_mib))
                .collect(),
        ),
        (
            "/metrics p50 (ms)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_p50_ms))
                .collect(),
        ),
        (
            "/metrics p99 (ms)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_p99_ms))
                .collect(),
        ),
        (
            "/metrics CPU (ms/scrape)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_cpu_ms))
                .collect(),
        ),
        (
            "/metrics first scrape (ms)",
            runs.iter().map(|r| format!("{:.1}", r.render_ms)).collect(),
        ),
        (
            "  its CPU (ms)",
            runs.iter()
                .map(|r| format!("{:.1}", r.render_cpu_ms))
                .collect(),
        ),
        (
            "/metrics body (KiB)",
            runs.iter().map(|r| format!("{:.0}", r.body_kib)).collect(),
        ),
        (
            "  gzipped (KiB)",
            runs.iter().map(|r| format!("{:.0}", r.gzip_kib)).collect(),
        ),
        (
            "/metrics series",
            runs.iter().map(|r| r.series.to_string()).collect(),
        ),
        (
            "wanted images",
            runs.iter().map(|r| r.wanted_seen.to_string()).collect(),
        ),
        (
            "update visible p50 (ms)",
            runs.iter().map(|r| opt(r.update_p50_ms, 0)).collect(),
        ),
        (
            "update visible max (ms)",
            runs.iter().map(|r| opt(r.update_max_ms, 0)).collect(),
        ),
        (
            "  event in store p50 (ms)",
            runs.iter().map(|r| opt(r.store_p50_ms, 1)).collect(),
        ),
        (
            "  event in store max (ms)",
            runs.iter().map(|r| opt(r.store_max_ms, 1)).collect(),
        ),
        (
            "one list (MB)",
            runs.iter().map(|r| format!("{:.1}", r.list_mb)).collect(),
        ),
        (
            "API MB per hour",
            runs.iter()
                .map(|r| format!("{:.0}", r.bytes_per_hour_mb))
                .collect(),
        ),
        (
            "watch CPU under churn (%)",
            runs.iter().map(|r| opt(r.churn_cpu_pct, 1)).collect(),
        ),
        (
            "  churn: visible p50 (ms)",
            runs.iter()
                .map(|r| opt(r.churn_visible_p50_ms, 0))
                .collect(),
        ),
        (
            "  churn: visible p99 (ms)",
            runs.iter()
                .map(|r| opt(r.churn_visible_p99_ms, 0))
                .collect(),
        ),
        (
            "  churn: RSS early (MiB)",
            runs.iter().map(|r| opt(r.churn_rss_early_mib, 1)).collect(),
        ),
        (
            "  churn: RSS late (MiB)",
            runs.iter().map(|r| opt(r.churn_rss_late_mib, 1)).collect(),
        ),
        (
            "  churn: interned early",
            runs.iter()
                .map(|r| interned(r.churn_interned_early))
                .collect(),
        ),
        (
            "  churn: interned late",
            runs.iter()
                .map(|r| interned(r.churn_interned_late))
                .collect(),
        ),
    ];
    println!("\nRESULTS");
    let first = 26;
    print!("{:<first$}", "metric");
    for h in &header {
        print!("  {h:>width$}");
    }
    println!();
    for (name, values) in &rows {
        print!("{name:<first$}");
        for v in values {
            print!("  {v:>width$}");
        }
        println!();
    }
    print_scrape_cost(runs, &header, width);

    println!(
        "\nTARGETS{}",
        if quick {
            " (quick scale: indicative only)"
        } else {
            ""
        }
    );
    println!(
        "{:<40}  {:<16}  {:>10}  {:>9}  RESULT",
        "target", "run", "measured", "limit"
    );
    let line = |target: &str, run: &Run, measured: String, limit: &str, met: bool| {
        println!(
            "{target:<40}  {:<16}  {measured:>10}  {limit:>9}  {}",
            format!("{} {}", run.scenario, run.mode),
            if met { "met" } else { "MISSED" }
        );
    };
    let big = |r: &Run| quick || r.nodes >= 5000;
    for r in runs {
        let ratio = r.ready_s / r.floor_s;
        line(
            "initial sync <= 2x decode floor",
            r,
            format!("{ratio:.2}x"),
            "2.00x",
            ratio <= 2.0,
        );
    }
    for r in runs.iter().filter(|r| big(r)) {
        line(
            "peak RSS <= 64 MiB",
            r,
            format!("{:.1} MiB", r.hwm_end_mib),
            "64 MiB",
            r.hwm_end_mib <= 64.0,
        );
    }
    for r in runs.iter().filter(|r| quick || r.scenario == "5000x100") {
        line(
            "steady RSS <= 32 MiB (5,000 x 100)",
            r,
            format!("{:.1} MiB", r.rss_steady_mib),
            "32 MiB",
            r.rss_steady_mib <= 32.0,
        );
    }
    for r in runs.iter().filter(|r| big(r)) {
        line(
            "/metrics p50 <= 10 ms (5,000 nodes)",
            r,
            format!("{:.1} ms", r.scrape_p50_ms),
            "10 ms",
            r.scrape_p50_ms <= 10.0,
        );
    }
    for r in runs.iter().filter(|r| r.churn_visible_p99_ms.is_some()) {
        let p99 = r.churn_visible_p99_ms.unwrap_or(f64::NAN);
        line(
            "churn: update visible p99 < 1 s",
            r,
            format!("{p99:.0} ms"),
            "1000 ms",
            p99 < 1000.0,
        );
        if let (Some((s0, e0)), Some((s1, e1))) = (r.churn_interned_early, r.churn_interned_late) {
            // The churn changes heartbeats only: the live nodes reference the same
            // names throughout, so the interner must not grow (beyond what one
            // clean-up interval leaves uncollected: 1%).
            let within = |a: u64, b: u64| b as f64 <= a as f64 * 1.01;
            line(
                "churn: no growth in interned strings",
                r,
                format!("{s0}->{s1} str, {e0}->{e1} ent"),
                "+1%",
                within(s0, s1) && within(e0, e1),
            );
        }
        if let (Some(early), Some(late)) = (r.churn_rss_early_mib, r.churn_rss_late_mib) {
            let drift = (late - early) / early * 100.0;
            line(
                "churn: RSS drift < 5%",
                r,
                format!("{drift:+.1}%"),
                "5%",
                drift.abs() < 5.0,
            );
        }
    }
    for r in runs.iter().filter(|r| r.update_p50_ms.is_some()) {
        let p50 = r.update_p50_ms.unwrap_or(f64::NAN);
        line(
            "watch update visible < 1 s (median)",
            r,
            format!("{p50:.0} ms"),
            "1000 ms",
            p50 < 1000.0,
        );
    }
}

/// `strings/entries`, or `-`.
/// What scrapes cost while nodes change ([`crate::scrape_cost`]), one column per run.
fn print_scrape_cost(runs: &[Run], header: &[String], width: usize) {
    let figures: Vec<_> = runs
        .iter()
        .map(|r| (r.one_node.as_ref(), r.paced.as_ref()))
        .collect();
    if figures.iter().all(|(o, p)| o.is_none() && p.is_none()) {
        return;
    }
    let first = 38;
    print!("\n{:<first$}", "scrapes while nodes change");
    for h in header {
        print!("  {h:>width$}");
    }
    println!();
    for (name, values) in crate::scrape_cost::rows(&figures) {
        print!("{name:<first$}");
        for v in values {
            print!("  {v:>width$}");
        }
        println!();
    }
}

fn interned(v: Option<(u64, u64)>) -> String {
    v.map_or_else(|| "-".into(), |(s, e)| format!("{s}/{e}"))
}
