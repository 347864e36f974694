//! The HTML status page served at `/`: self-contained, no scripts, no external assets.

use crate::analysis::{NodeReport, NodeStatus, Report};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(b: Option<u64>) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let Some(b) = b else { return "&ndash;".into() };
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn age(last_update: Option<SystemTime>, now: SystemTime) -> String {
    match last_update {
        None => "no node data yet".into(),
        Some(t) => {
            let secs = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
            format!("node data refreshed {secs} s ago")
        }
    }
}

fn row_class(n: &NodeReport) -> &'static str {
    match n.status() {
        NodeStatus::AtCap => "node at-cap",
        NodeStatus::NearCap => "node near-cap",
        NodeStatus::NotEligible | NodeStatus::Ok => "node",
    }
}

fn status_tag(n: &NodeReport) -> String {
    let status = n.status();
    let class = match status {
        NodeStatus::AtCap => "at-cap",
        NodeStatus::NearCap => "near-cap",
        NodeStatus::NotEligible => "off",
        NodeStatus::Ok => "ok",
    };
    let tag = format!("<span class=\"tag {class}\">{}</span>", status.as_str());
    match (status, &n.not_eligible_reason) {
        (NodeStatus::NotEligible, Some(reason)) => {
            format!("{tag} <span class=\"why\">{}</span>", esc(reason))
        }
        _ => tag,
    }
}

pub fn render(report: &Report, last_update: Option<SystemTime>, now: SystemTime) -> String {
    render_with_metrics_at(report, last_update, now, "/metrics")
}

/// [`render`], linking to the metrics at `metrics_path` (`--web.telemetry-path`).
pub fn render_with_metrics_at(
    report: &Report,
    last_update: Option<SystemTime>,
    now: SystemTime,
    metrics_path: &str,
) -> String {
    let mut h = String::with_capacity(4096 + report.nodes.len() * 600);
    h.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>imagecap-exporter</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2125}",
        "h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.5rem 0 .4rem}",
        "p.meta{color:#555;margin:.2rem 0 1rem}",
        "table{border-collapse:collapse;width:100%}",
        "th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}",
        "th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}",
        ".bar{position:relative;width:14rem;height:1.1rem;background:#e5e7eb;border-radius:3px}",
        ".bar span{position:absolute;left:0;top:0;bottom:0;background:#22a06b;border-radius:3px}",
        ".bar b{position:absolute;left:.4rem;top:0;font-weight:600;font-size:.8rem;line-height:1.1rem}",
        "tr.near-cap .bar span{background:#e2b203}tr.at-cap .bar span{background:#c9372c}",
        ".bar span.hidden,tr.at-cap .bar span.hidden{background:#c9372c;opacity:.35;border-radius:0 3px 3px 0}",
        ".state{font-size:.75rem;color:#555}.state.hidden{color:#ae2e24;font-weight:600}",
        "td.name{white-space:nowrap;font-weight:600}.tag{white-space:nowrap}",
        ".tag{display:inline-block;padding:0 .35rem;border-radius:3px;font-size:.8rem;font-weight:600}",
        ".tag.at-cap{background:#ffeceb;color:#ae2e24}.tag.near-cap{background:#fff7d6;color:#7f5f01}",
        ".tag.ok{background:#dcfff1;color:#216e4e}.tag.off{background:#f1f2f4;color:#44546f}",
        "ul{margin:0;padding-left:1.1rem}code{font-size:.85rem}.why{color:#555;font-size:.8rem}",
        "</style></head><body>\n<h1>Image cap (nodeStatusMaxImages)</h1>\n"
    ));
    let at_cap = report.nodes.iter().filter(|n| n.at_cap).count();
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} nodes, {} eligible for prepulling, <strong>{} at the image cap</strong>; {}.</p>",
        report.nodes.len(),
        report.eligible_nodes,
        at_cap,
        age(last_update, now)
    );
    h.push_str(concat!(
        "<table id=\"nodes\"><thead><tr><th>Node</th><th>Images / cap</th><th>Status</th>",
        "<th>Image bytes</th><th>Ephemeral capacity</th><th>Allocatable</th>",
        "<th>Recommended cap</th><th>Missing wanted images</th></tr></thead><tbody>\n"
    ));
    for n in &report.nodes {
        let hidden = n.hidden_images.unwrap_or(0);
        let (cap, width, hidden_width) = if n.max_images > 0 {
            // With images hidden, the bar spans everything the runtime holds:
            // reported, then the hidden rest in a fainter segment.
            let scale = (n.max_images as f64).max(f64::from(n.image_count) + f64::from(hidden));
            (
                n.max_images.to_string(),
                (f64::from(n.image_count) / scale * 100.0).clamp(0.0, 100.0),
                (f64::from(hidden) / scale * 100.0).clamp(0.0, 100.0),
            )
        } else if n.max_images == 0 {
            ("0".to_string(), 100.0, 0.0)
        } else {
            ("unlimited".to_string(), 0.0, 0.0)
        };
        let hidden_bar = if hidden > 0 {
            format!(
                "<span class=\"hidden\" style=\"left:{width:.1}%;width:{hidden_width:.1}%\"></span>"
            )
        } else {
            String::new()
        };
        let runtime_note = match (n.runtime_images, n.hidden_images) {
            (Some(_), Some(h)) if h > 0 => format!(" &middot; {h} hidden"),
            (Some(rt), _) => format!(" &middot; runtime {rt}"),
            _ => String::new(),
        };
        let title = match n.runtime_images {
            Some(rt) => format!(
                "{} reported of cap {cap}; the runtime holds {rt}",
                n.image_count
            ),
            None => format!("{} of {cap}", n.image_count),
        };
        let status = status_tag(n);
        let missing = if n.missing.is_empty() {
            "&ndash;".to_string()
        } else {
            let state = n.missing_state.map(|s| s.as_str()).unwrap_or("");
            let items: String = n
                .missing
                .iter()
                .map(|m| {
                    format!(
                        "<li><code>{}</code> <span class=\"state {s}\">{s}</span></li>",
                        esc(&m.image),
                        s = m.state.as_str()
                    )
                })
                .collect();
            format!("{} {state}<ul>{items}</ul>", n.missing.len())
        };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\" data-node=\"{name}\"><td class=\"name\">{name}</td>\
             <td><div class=\"bar\" title=\"{title}\"><span style=\"width:{width:.1}%\"></span>{hidden_bar}\
             <b>{images} / {cap}{runtime_note}</b></div></td><td>{status}</td><td class=\"num\">{size}</td>\
             <td class=\"num\">{capacity}</td><td class=\"num\">{alloc}</td><td class=\"num\">{rec}</td>\
             <td>{missing}</td></tr>",
            class = row_class(n),
            name = esc(&n.name),
            images = n.image_count,
            size = bytes(Some(n.image_size_bytes)),
            capacity = bytes(n.ephemeral_storage_capacity_bytes),
            alloc = bytes(n.ephemeral_storage_allocatable_bytes),
            rec = n
                .recommended_max_images
                .map_or("&ndash;".into(), |r| r.to_string()),
        );
    }
    h.push_str("</tbody></table>\n");
    if !report.images.is_empty() {
        h.push_str(
            "<h2>Wanted images</h2><table id=\"images\"><thead><tr><th>Image</th>\
             <th>Wanted by</th><th>Eligible nodes reporting it</th></tr></thead><tbody>\n",
        );
        for i in &report.images {
            let by: Vec<&str> = i.sources.iter().map(|s| s.as_str()).collect();
            let _ = writeln!(
                h,
                "<tr data-image=\"{img}\"><td><code>{img}</code></td><td>{by}</td>\
                 <td class=\"num\">{} / {}</td></tr>",
                i.nodes,
                i.eligible_nodes,
                img = esc(&i.image),
                by = by.join(", ")
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str(
        "<p class=\"meta\">Nodes at the cap hide images from the API. Remedy: <code>nodeStatusMaxImages: -1</code> \
         (or about a third of the node's ephemeral storage in GB) in the kubelet config, then restart the kubelet. \
         Metrics: ",
    );
    // Relative to the page (served at /), so that it also works behind a proxy
    // that serves the exporter under a prefix.
    let _ = write!(
        h,
        "<a href=\"{}\">{}</a>.</p>\n</body></html>\n",
        esc(metrics_path.trim_start_matches('/')),
        esc(metrics_path)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::WantSource;
    use crate::analysis::cluster::{CapSource, ImageReport, MissingImage, MissingState};

    fn node(name: &str, images: u32, max: i64) -> NodeReport {
        NodeReport {
            name: name.into(),
            image_count: images,
            max_images: max,
            max_images_source: CapSource::Default,
            cap_ratio: if max > 0 {
                f64::from(images) / max as f64
            } else {
                0.0
            },
            at_cap: max > 0 && i64::from(images) >= max,
            image_size_bytes: 3 << 30,
            ephemeral_storage_capacity_bytes: Some(1 << 40),
            ephemeral_storage_allocatable_bytes: None,
            recommended_max_images: Some(367),
            eligible: true,
            not_eligible_reason: None,
            ..NodeReport::default()
        }
    }

    #[test]
    fn marks_rows_and_escapes() {
        let mut full = node("full<script>", 50, 50);
        full.set_missing(vec![MissingImage {
            image: "x:1".into(),
            state: MissingState::Unverifiable,
        }]);
        let mut tainted = node("tainted", 3, 50);
        tainted.eligible = false;
        tainted.not_eligible_reason = Some("taint a=<b>:NoSchedule".into());
        let r = Report {
            nodes: vec![full, node("near", 46, 50), node("big", 137, -1), tainted],
            images: vec![ImageReport {
                image: "x:1".into(),
                sources: vec![WantSource::Nublado, WantSource::DaemonSet],
                nodes: 2,
                eligible_nodes: 3,
            }],
            eligible_nodes: 3,
            sources: vec![],
            menu: None,
        };
        let now = SystemTime::now();
        let h = render(&r, Some(now - Duration::from_secs(7)), now);
        assert!(
            h.contains("<tr class=\"node at-cap\" data-node=\"full&lt;script&gt;\">"),
            "{h}"
        );
        assert!(!h.contains("<script"), "escaped");
        assert!(h.contains("<tr class=\"node near-cap\" data-node=\"near\">"));
        assert!(h.contains("<tr class=\"node\" data-node=\"big\">"));
        assert!(
            h.contains(
                "not eligible</span> <span class=\"why\">taint a=&lt;b&gt;:NoSchedule</span>"
            ),
            "the reason, escaped: {h}"
        );
        assert!(h.contains("style=\"width:92.0%\""));
        assert!(h.contains("<b>137 / unlimited</b>"));
        assert!(h.contains(
            "1 unverifiable<ul><li><code>x:1</code> <span class=\"state unverifiable\">unverifiable</span></li></ul>"
        ));
        assert!(h.contains("refreshed 7 s ago"));
        assert!(h.contains("3.0 GiB") && h.contains("1.0 TiB"));
        assert!(h.contains("<td>nublado, daemonset</td><td class=\"num\">2 / 3</td>"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no external assets"
        );
    }

    #[test]
    fn hidden_images_are_a_fainter_segment_past_the_reported_ones() {
        let mut full = node("full", 50, 50);
        full.runtime_images = Some(60);
        full.hidden_images = Some(10);
        full.set_missing(vec![MissingImage {
            image: "lab:w_1".into(),
            state: MissingState::Hidden,
        }]);
        let mut roomy = node("roomy", 10, 50);
        roomy.runtime_images = Some(10);
        roomy.hidden_images = Some(0);
        let r = Report {
            nodes: vec![full, roomy],
            images: vec![],
            eligible_nodes: 2,
            sources: vec![],
            menu: None,
        };
        let now = SystemTime::now();
        let h = render(&r, Some(now), now);
        // 50 of 60 reported (83.3%), 10 hidden after them (16.7%).
        assert!(
            h.contains(
                "<span style=\"width:83.3%\"></span><span class=\"hidden\" style=\"left:83.3%;width:16.7%\"></span>"
            ),
            "{h}"
        );
        assert!(h.contains("<b>50 / 50 &middot; 10 hidden</b>"));
        assert!(h.contains("title=\"50 reported of cap 50; the runtime holds 60\""));
        assert!(h.contains("<span class=\"state hidden\">hidden</span>"));
        assert!(h.contains("<b>10 / 50 &middot; runtime 10</b>"));
        assert_eq!(
            h.matches("class=\"hidden\"").count(),
            1,
            "none under the cap"
        );
    }

    #[test]
    fn before_any_data() {
        let r = Report {
            nodes: vec![],
            images: vec![],
            eligible_nodes: 0,
            sources: vec![],
            menu: None,
        };
        assert!(render(&r, None, SystemTime::now()).contains("no node data yet"));
        assert!(render(&r, None, SystemTime::now()).contains("<a href=\"metrics\">/metrics</a>"));
        let h = render_with_metrics_at(&r, None, SystemTime::now(), "/prom/metrics");
        assert!(
            h.contains("<a href=\"prom/metrics\">/prom/metrics</a>."),
            "{h}"
        );
        assert!(h.ends_with("</body></html>\n"));
    }
}
