//! The HTML status page served at `/`: self-contained, no scripts, no external assets.

use crate::analysis::menu::{MenuReport, MenuState};
use crate::analysis::report::{ImageReport, MissingState, SourceReport};
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

/// The node agent's pruning plan in a line, when the agent prunes: what the next
/// run removes, or why it removes nothing.
fn prune_note(n: &NodeReport) -> String {
    let Some(p) = &n.prune else {
        return String::new();
    };
    let target = p
        .target
        .map_or("no target".to_string(), |t| format!("target {t}"));
    let text = if let Some(b) = &p.blocked {
        format!("pruning blocked: {}", esc(b))
    } else if p.remove > 0 {
        format!(
            "pruning removes {} ({}), {target}{}",
            p.remove,
            bytes(Some(p.remove_bytes)),
            if p.deferred > 0 {
                format!(", {} next run", p.deferred)
            } else {
                String::new()
            }
        )
    } else if p.short_by > 0 {
        format!("pruning: {} protected images above {target}", p.short_by)
    } else {
        format!("pruning: nothing to remove, {target}")
    };
    format!(
        "<div class=\"prune\" title=\"the node agent's plan: {} images held\">{text}</div>",
        p.held
    )
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
    match (status, &n.prepull.not_eligible_reason) {
        (NodeStatus::NotEligible, Some(reason)) => {
            format!("{tag} <span class=\"why\">{}</span>", esc(reason))
        }
        _ => tag,
    }
}

/// What a missing state means, in the legend and the tooltip of each missing image.
fn state_help(state: MissingState) -> &'static str {
    match state {
        MissingState::Absent => {
            "not on the node: its list is complete (under the cap), or the image is larger \
             than the smallest one it lists at the cap, so it would be listed if it were there"
        }
        MissingState::Unlistable => {
            "smaller than the smallest image the node lists at its cap: the kubelet's list, \
             largest first, can never show it there, pulled or not, so the prepuller pulls it \
             on every pass"
        }
        MissingState::Hidden => {
            "on the node (its runtime holds it), hidden from the API by the cap: the prepuller \
             pulls it again and the spawner menu leaves it out"
        }
        MissingState::Unverifiable => {
            "the node is at its cap: it may be there, hidden; neither sizes nor a node-agent \
             report tell"
        }
    }
}

/// The order the legend explains the missing states in: most actionable first.
const LEGEND: [MissingState; 4] = [
    MissingState::Absent,
    MissingState::Unlistable,
    MissingState::Hidden,
    MissingState::Unverifiable,
];

fn menu_label(state: MenuState) -> &'static str {
    match state {
        MenuState::Shown => "shown",
        MenuState::HiddenByCap => "hidden by the cap",
        MenuState::MaybeHiddenByCap => "maybe hidden by the cap",
        MenuState::Pulling => "pulling",
    }
}

fn menu_help(state: MenuState) -> &'static str {
    match state {
        MenuState::Shown => "in the menu: on every eligible node, as Nublado reads the nodes",
        MenuState::HiddenByCap => {
            "out of the menu as long as the cap holds, whatever the prepuller does: every node \
             Nublado counts as missing it is at its cap and holds it hidden or can never list it"
        }
        MenuState::MaybeHiddenByCap => {
            "every node Nublado counts as missing it is at its cap, and on some it is \
             unverifiable: the cap may keep it out of the menu"
        }
        MenuState::Pulling => "some node really lacks it: the menu shows it when the pulls finish",
    }
}

/// The "Spawner menu" section: counts per state, then each image the cap keeps
/// out (for sure or maybe) with Nublado's display name.
fn render_menu(h: &mut String, menu: &MenuReport) {
    h.push_str(
        "<h2 id=\"menu\">Spawner menu</h2>\
         <table id=\"menu-states\" class=\"narrow\"><thead><tr><th>Menu state</th>\
         <th>Images</th><th>Meaning</th></tr></thead><tbody>\n",
    );
    for &state in MenuState::ALL {
        let _ = writeln!(
            h,
            "<tr data-menu-state=\"{s}\"><td><span class=\"tag {s}\">{label}</span></td>\
             <td class=\"num\">{n}</td><td class=\"why\">{help}</td></tr>",
            s = state.as_str(),
            label = menu_label(state),
            n = menu.count(state),
            help = menu_help(state),
        );
    }
    h.push_str("</tbody></table>\n");
    if menu.hidden.is_empty() {
        return;
    }
    h.push_str(
        "<table id=\"menu-hidden\"><thead><tr><th>Left out of the menu</th><th>State</th>\
         <th>Image</th><th>At-cap nodes</th></tr></thead><tbody>\n",
    );
    for m in &menu.hidden {
        let nodes: Vec<String> = m.nodes.iter().map(|n| esc(n)).collect();
        let _ = writeln!(
            h,
            "<tr data-menu-image=\"{img}\"><td class=\"name\">{name}</td>\
             <td><span class=\"tag {s}\" title=\"{help}\">{label}</span></td>\
             <td><code>{img}</code></td><td>{nodes}</td></tr>",
            img = esc(&m.image),
            name = esc(&m.name),
            s = m.state.as_str(),
            help = menu_help(m.state),
            label = menu_label(m.state),
            nodes = nodes.join(", "),
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The "Prepull loop" section: per source, the (node, image) pairs at the cap that
/// the prepuller pulls on every pass for nothing. Only when there are some.
fn render_loop(h: &mut String, sources: &[SourceReport]) {
    if sources.iter().all(|s| s.loop_pairs == 0) {
        return;
    }
    h.push_str(
        "<h2 id=\"loop\">Prepull loop</h2><p class=\"meta\">Pairs of an eligible node at its cap \
         and a wanted image it holds <span class=\"state hidden\">hidden</span> or can never list \
         (<span class=\"state unlistable\">unlistable</span>): each is a pull the prepuller \
         schedules again on every pass, for nothing.</p>\
         <table id=\"loop-pairs\" class=\"narrow\"><thead><tr><th>Source</th>\
         <th>Pairs pulled on every pass</th></tr></thead><tbody>\n",
    );
    for s in sources {
        let _ = writeln!(
            h,
            "<tr data-source=\"{src}\"><td>{src}</td><td class=\"num\">{n}</td></tr>",
            src = esc(s.source.as_str()),
            n = s.loop_pairs,
        );
    }
    h.push_str("</tbody></table>\n");
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
    render_head(&mut h);
    render_summary(&mut h, report, last_update, now);
    render_nodes(&mut h, &report.nodes);
    render_legend(&mut h, &report.nodes);
    if let Some(menu) = &report.menu {
        render_menu(&mut h, menu);
    }
    render_loop(&mut h, &report.sources);
    render_images(&mut h, &report.images);
    render_footer(&mut h, metrics_path);
    h
}

/// The start of the page: the doctype, the head with its refresh and inline style
/// sheet, and the page title.
fn render_head(h: &mut String) {
    h.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>imagecap-exporter</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2125}",
        "h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.5rem 0 .4rem}",
        "p.meta{color:#555;margin:.2rem 0 1rem}",
        "div.prune{color:#555;font-size:.85em;margin-top:.2rem}",
        "table{border-collapse:collapse;width:100%}",
        "th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}",
        "th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}",
        ".bar{position:relative;width:12rem;height:1.1rem;background:#e5e7eb;border-radius:3px}",
        ".bar span{position:absolute;left:0;top:0;bottom:0;background:#22a06b;border-radius:3px}",
        ".bar b{position:absolute;left:.4rem;top:0;font-weight:600;font-size:.8rem;line-height:1.1rem}",
        "tr.near-cap .bar span{background:#e2b203}tr.at-cap .bar span{background:#c9372c}",
        ".bar span.hidden,tr.at-cap .bar span.hidden{background:#c9372c;opacity:.35;border-radius:0 3px 3px 0}",
        ".state{font-size:.75rem;color:#555}.state.hidden{color:#ae2e24;font-weight:600}",
        ".state.absent{color:#a54800}.state.unverifiable{color:#44546f}",
        ".state.unlistable{color:#5e4db2;font-weight:600}",
        "ul.legend{list-style:none;padding:0;margin:.5rem 0 0;color:#555;font-size:.8rem}",
        "table.narrow{width:auto}code{overflow-wrap:anywhere}td.num{white-space:nowrap}",
        "#nodes td:last-child{min-width:17rem}table+table{margin-top:.8rem}.why{overflow-wrap:anywhere}",
        "td.name{white-space:nowrap;font-weight:600}.tag{white-space:nowrap}",
        ".tag{display:inline-block;padding:0 .35rem;border-radius:3px;font-size:.8rem;font-weight:600}",
        ".tag.at-cap{background:#ffeceb;color:#ae2e24}.tag.near-cap{background:#fff7d6;color:#7f5f01}",
        ".tag.ok{background:#dcfff1;color:#216e4e}.tag.off{background:#f1f2f4;color:#44546f}",
        ".tag.shown{background:#dcfff1;color:#216e4e}.tag.hidden_by_cap{background:#ffeceb;color:#ae2e24}",
        ".tag.maybe_hidden_by_cap{background:#fff7d6;color:#7f5f01}.tag.pulling{background:#e9f2ff;color:#0055cc}",
        "ul{margin:0;padding-left:1.1rem}code{font-size:.85rem}.why{color:#555;font-size:.8rem}",
        "</style></head><body>\n<h1>Image cap (nodeStatusMaxImages)</h1>\n"
    ));
}

/// The summary line under the title: node counts, how many nodes are at the cap,
/// how many images the cap keeps out of the spawner menu (when there are some),
/// and how old the node data is.
fn render_summary(
    h: &mut String,
    report: &Report,
    last_update: Option<SystemTime>,
    now: SystemTime,
) {
    let _ = write!(
        h,
        "<p class=\"meta\">{} nodes, {} eligible for prepulling, <strong>{} at the image cap</strong>",
        report.nodes.len(),
        report.eligible_nodes,
        report.nodes.iter().filter(|n| n.cap.at_cap).count(),
    );
    if let Some(m) = &report.menu {
        let left_out = m.hidden_by_cap + m.maybe_hidden_by_cap;
        if left_out > 0 {
            let _ = write!(
                h,
                ", <strong>{left_out} left out of the spawner menu by the cap</strong>"
            );
            if m.maybe_hidden_by_cap > 0 {
                let _ = write!(h, " ({} maybe)", m.maybe_hidden_by_cap);
            }
        }
    }
    let _ = writeln!(h, "; {}.</p>", age(last_update, now));
}

/// The node table: its header, then one row per node ([`render_node_row`]).
fn render_nodes(h: &mut String, nodes: &[NodeReport]) {
    h.push_str(concat!(
        "<table id=\"nodes\"><thead><tr><th>Node</th><th>Images / cap</th><th>Status</th>",
        "<th>Image bytes</th><th>Ephemeral capacity</th><th>Allocatable</th>",
        "<th>Recommended cap</th><th>Missing wanted images</th></tr></thead><tbody>\n"
    ));
    for n in nodes {
        render_node_row(h, n);
    }
    h.push_str("</tbody></table>\n");
}

/// One row of the node table: the name, the bar ([`render_bar`]), the status with
/// the agent's pruning plan, the sizes, the recommended cap and the missing wanted
/// images ([`render_missing`]).
fn render_node_row(h: &mut String, n: &NodeReport) {
    let _ = write!(
        h,
        "<tr class=\"{class}\" data-node=\"{name}\"><td class=\"name\">{name}</td><td>",
        class = row_class(n),
        name = esc(&n.name),
    );
    render_bar(h, n);
    let _ = write!(
        h,
        "</td><td>{status}{prune}</td><td class=\"num\">{size}</td>\
         <td class=\"num\">{capacity}</td><td class=\"num\">{alloc}</td><td class=\"num\">{rec}</td>\
         <td>",
        status = status_tag(n),
        prune = prune_note(n),
        size = bytes(Some(n.cap.image_size_bytes)),
        capacity = bytes(n.storage.ephemeral_storage_capacity_bytes),
        alloc = bytes(n.storage.ephemeral_storage_allocatable_bytes),
        rec = n
            .storage
            .recommended_max_images
            .map_or("&ndash;".into(), |r| r.to_string()),
    );
    render_missing(h, n);
    h.push_str("</td></tr>\n");
}

/// A node's bar: the reported images against the cap, the images hidden by the
/// cap in a fainter segment after them, and the counts written over it.
fn render_bar(h: &mut String, n: &NodeReport) {
    let hidden = n.runtime.hidden_images.unwrap_or(0);
    let (cap, width, hidden_width) = if n.cap.max_images > 0 {
        // With images hidden, the bar spans everything the runtime holds:
        // reported, then the hidden rest in a fainter segment.
        let scale = (n.cap.max_images as f64).max(f64::from(n.cap.image_count) + f64::from(hidden));
        (
            n.cap.max_images.to_string(),
            (f64::from(n.cap.image_count) / scale * 100.0).clamp(0.0, 100.0),
            (f64::from(hidden) / scale * 100.0).clamp(0.0, 100.0),
        )
    } else if n.cap.max_images == 0 {
        ("0".to_string(), 100.0, 0.0)
    } else {
        ("unlimited".to_string(), 0.0, 0.0)
    };
    let _ = write!(h, "<div class=\"bar\" title=\"{}", n.cap.image_count);
    match n.runtime.runtime_images {
        Some(rt) => {
            let _ = write!(h, " reported of cap {cap}; the runtime holds {rt}");
        }
        None => {
            let _ = write!(h, " of {cap}");
        }
    }
    let _ = write!(h, "\"><span style=\"width:{width:.1}%\"></span>");
    if hidden > 0 {
        let _ = write!(
            h,
            "<span class=\"hidden\" style=\"left:{width:.1}%;width:{hidden_width:.1}%\"></span>"
        );
    }
    let _ = write!(h, "<b>{} / {cap}", n.cap.image_count);
    match (n.runtime.runtime_images, n.runtime.hidden_images) {
        (Some(_), Some(hid)) if hid > 0 => {
            let _ = write!(h, " &middot; {hid} hidden");
        }
        (Some(rt), _) => {
            let _ = write!(h, " &middot; runtime {rt}");
        }
        _ => {}
    }
    h.push_str("</b></div>");
}

/// A node's missing wanted images: how many and the node's state, then each image
/// with its own state and what that state means; a dash when none is missing.
fn render_missing(h: &mut String, n: &NodeReport) {
    if n.prepull.missing.is_empty() {
        h.push_str("&ndash;");
        return;
    }
    let state = n.prepull.missing_state.map(|s| s.as_str()).unwrap_or("");
    let _ = write!(h, "{} {state}<ul>", n.prepull.missing.len());
    for m in &n.prepull.missing {
        let _ = write!(
            h,
            "<li title=\"{help}\"><code>{}</code> <span class=\"state {s}\">{s}</span></li>",
            esc(&m.image),
            s = m.state.as_str(),
            help = state_help(m.state)
        );
    }
    h.push_str("</ul>");
}

/// The legend under the node table: what each missing state means. Only when some
/// node misses a wanted image.
fn render_legend(h: &mut String, nodes: &[NodeReport]) {
    if nodes.iter().all(|n| n.prepull.missing.is_empty()) {
        return;
    }
    h.push_str("<ul class=\"legend\" id=\"states\">");
    for state in LEGEND {
        let _ = write!(
            h,
            "<li><span class=\"state {s}\">{s}</span>: {help}.</li>",
            s = state.as_str(),
            help = state_help(state)
        );
    }
    h.push_str("</ul>\n");
}

/// The "Wanted images" section: each wanted image, the sources that want it and
/// how many eligible nodes report it. Only when some image is wanted.
fn render_images(h: &mut String, images: &[ImageReport]) {
    if images.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Wanted images</h2><table id=\"images\"><thead><tr><th>Image</th>\
         <th>Wanted by</th><th>Eligible nodes reporting it</th></tr></thead><tbody>\n",
    );
    for i in images {
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

/// The footer: the remedy for nodes at the cap, the link to the metrics at
/// `metrics_path`, and the end of the page.
fn render_footer(h: &mut String, metrics_path: &str) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::WantSource;
    use crate::analysis::menu::MenuHidden;
    use crate::analysis::report::fixtures;
    use crate::analysis::report::{ImageReport, MissingImage, MissingState};

    /// A node of 3 GiB of images.
    fn node(name: &str, images: u32, max: i64) -> NodeReport {
        fixtures::node(name, images, max)
            .image_size_bytes(3 << 30)
            .build()
    }

    #[test]
    fn marks_rows_and_escapes() {
        let mut full = node("full<script>", 50, 50);
        full.prepull.set_missing(vec![MissingImage {
            image: "x:1".into(),
            state: MissingState::Unverifiable,
        }]);
        let mut tainted = node("tainted", 3, 50);
        tainted.prepull.eligible = false;
        tainted.prepull.not_eligible_reason = Some("taint a=<b>:NoSchedule".into());
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
            "1 unverifiable<ul><li title=\"the node is at its cap: it may be there, hidden; \
             neither sizes nor a node-agent report tell\"><code>x:1</code> \
             <span class=\"state unverifiable\">unverifiable</span></li></ul>"
        ));
        assert!(h.contains("refreshed 7 s ago"));
        assert!(h.contains("3.0 GiB") && h.contains("1.0 TiB"));
        assert!(h.contains("<td>nublado, daemonset</td><td class=\"num\">2 / 3</td>"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no external assets"
        );
    }

    /// A node at its cap that can never list two wanted images and holds a third
    /// hidden, and Nublado's menu leaving one out for sure and one maybe.
    fn at_cap_with_menu() -> Report {
        let mut full = node("full", 50, 50);
        full.prepull.set_missing(vec![
            MissingImage {
                image: "ghcr.io/x/lab:w_2".into(),
                state: MissingState::Unlistable,
            },
            MissingImage {
                image: "docker.io/library/busybox:1.36".into(),
                state: MissingState::Unlistable,
            },
            MissingImage {
                image: "ghcr.io/x/lab:w_3".into(),
                state: MissingState::Hidden,
            },
        ]);
        let source = |source, loop_pairs| SourceReport {
            source,
            images: 2,
            up: true,
            last_success_seconds: None,
            dropped_images: 0,
            loop_pairs,
        };
        Report {
            nodes: vec![full, node("roomy", 10, 50)],
            images: vec![],
            eligible_nodes: 2,
            sources: vec![
                source(WantSource::Config, 1),
                source(WantSource::Nublado, 2),
                source(WantSource::KubeFledged, 0),
            ],
            menu: Some(MenuReport {
                shown: 4,
                hidden_by_cap: 1,
                maybe_hidden_by_cap: 1,
                pulling: 3,
                hidden: vec![
                    MenuHidden {
                        image: "ghcr.io/x/lab:w_2".into(),
                        name: "Weekly <2>".into(),
                        state: MenuState::HiddenByCap,
                        nodes: vec!["full".into(), "other&1".into()],
                    },
                    MenuHidden {
                        image: "ghcr.io/x/lab:w_4".into(),
                        name: "Weekly 4".into(),
                        state: MenuState::MaybeHiddenByCap,
                        nodes: vec!["full".into()],
                    },
                ],
            }),
        }
    }

    #[test]
    fn unlistable_is_a_state_of_its_own_with_its_colour_and_legend() {
        let now = SystemTime::now();
        let h = render(&at_cap_with_menu(), Some(now), now);
        assert!(
            h.contains("3 unlistable<ul>"),
            "the node's most actionable state: {h}"
        );
        assert!(h.contains(
            "<code>ghcr.io/x/lab:w_2</code> <span class=\"state unlistable\">unlistable</span></li>"
        ));
        assert!(h.contains("<span class=\"state hidden\">hidden</span></li>"));
        // Each state has a colour of its own.
        let colours: Vec<&str> = MissingState::ALL
            .iter()
            .map(|s| {
                let rule = format!(".state.{}{{color:", s.as_str());
                let at = h
                    .find(&rule)
                    .unwrap_or_else(|| panic!("no colour for {rule}"));
                &h[at + rule.len()..at + rule.len() + 7]
            })
            .collect();
        let mut distinct = colours.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{colours:?}");
        // The legend explains every state, the tooltip each image's.
        let legend = &h[h
            .find("<ul class=\"legend\" id=\"states\">")
            .expect("a legend")..];
        for s in MissingState::ALL {
            assert!(
                legend.contains(&format!(
                    "<li><span class=\"state {s}\">{s}</span>: {}.</li>",
                    state_help(s),
                    s = s.as_str()
                )),
                "{s:?} in the legend"
            );
        }
        assert!(state_help(MissingState::Unlistable).contains("never show it there"));
        assert!(h.contains(&format!(
            "<li title=\"{}\"><code>docker.io/library/busybox:1.36</code>",
            state_help(MissingState::Unlistable)
        )));
    }

    #[test]
    fn spawner_menu_counts_names_and_the_prepull_loop() {
        let now = SystemTime::now();
        let h = render(&at_cap_with_menu(), Some(now), now);
        assert!(
            h.contains("<strong>2 left out of the spawner menu by the cap</strong> (1 maybe);"),
            "{h}"
        );
        assert!(h.contains("<h2 id=\"menu\">Spawner menu</h2>"));
        for (state, label, n) in [
            ("shown", "shown", 4),
            ("hidden_by_cap", "hidden by the cap", 1),
            ("maybe_hidden_by_cap", "maybe hidden by the cap", 1),
            ("pulling", "pulling", 3),
        ] {
            assert!(
                h.contains(&format!(
                    "<tr data-menu-state=\"{state}\"><td><span class=\"tag {state}\">{label}</span></td>\
                     <td class=\"num\">{n}</td>"
                )),
                "{state} in {h}"
            );
            assert!(
                h.contains(&format!(".tag.{state}{{")),
                "{state} has a colour"
            );
        }
        // Each image the cap keeps out: Nublado's name (escaped), the reference, the nodes.
        assert!(h.contains(
            "<tr data-menu-image=\"ghcr.io/x/lab:w_2\"><td class=\"name\">Weekly &lt;2&gt;</td>\
             <td><span class=\"tag hidden_by_cap\""
        ));
        assert!(
            h.contains("<td><code>ghcr.io/x/lab:w_2</code></td><td>full, other&amp;1</td></tr>")
        );
        assert!(h.contains("<td class=\"name\">Weekly 4</td>"));
        assert!(!h.contains("Weekly <2>"));
        // The loop, per source.
        assert!(h.contains("<h2 id=\"loop\">Prepull loop</h2>"));
        assert!(
            h.contains("<tr data-source=\"config\"><td>config</td><td class=\"num\">1</td></tr>")
        );
        assert!(
            h.contains("<tr data-source=\"nublado\"><td>nublado</td><td class=\"num\">2</td></tr>")
        );
        assert!(h.contains(
            "<tr data-source=\"kube-fledged\"><td>kube-fledged</td><td class=\"num\">0</td></tr>"
        ));
        // The menu comes before the wanted images and the footer.
        assert!(h.find("id=\"menu\"") < h.find("Remedy:"));
    }

    #[test]
    fn the_agents_pruning_plan_shows_per_node() {
        use crate::analysis::prune::PlanSummary;
        let mut r = Report {
            nodes: vec![
                node("a", 50, 50),
                node("b", 50, 50),
                node("c", 50, 50),
                node("d", 10, 50),
            ],
            images: vec![],
            eligible_nodes: 4,
            sources: vec![],
            menu: None,
        };
        r.nodes[0].prune = Some(PlanSummary {
            held: 60,
            target: Some(45),
            remove: 10,
            remove_bytes: 2_000_000_000,
            deferred: 5,
            ..PlanSummary::default()
        });
        r.nodes[1].prune = Some(PlanSummary {
            held: 60,
            target: Some(45),
            remove: 0,
            blocked: Some("the exporter <did not> answer".into()),
            ..PlanSummary::default()
        });
        r.nodes[2].prune = Some(PlanSummary {
            held: 60,
            target: Some(45),
            short_by: 3,
            ..PlanSummary::default()
        });
        let h = render_with_metrics_at(&r, None, SystemTime::UNIX_EPOCH, "/metrics");
        assert!(
            h.contains("pruning removes 10 (1.9 GiB), target 45, 5 next run"),
            "{h}"
        );
        assert!(
            h.contains("pruning blocked: the exporter &lt;did not&gt; answer"),
            "{h}"
        );
        assert!(
            h.contains("pruning: 3 protected images above target 45"),
            "{h}"
        );
        assert_eq!(h.matches("<div class=\"prune\"").count(), 3, "none for d");
    }

    #[test]
    fn no_menu_without_nublado_and_no_loop_without_pairs() {
        let mut r = at_cap_with_menu();
        r.menu = None;
        for s in &mut r.sources {
            s.loop_pairs = 0;
        }
        let now = SystemTime::now();
        let h = render(&r, Some(now), now);
        assert!(
            !h.contains("Spawner menu") && !h.contains("data-menu"),
            "{h}"
        );
        assert!(!h.contains("spawner menu by the cap"));
        assert!(!h.contains("Prepull loop") && !h.contains("data-source"));
        assert!(h.contains("id=\"states\""), "the legend stays");
        // Nothing missing anywhere: no legend either.
        r.nodes[0].prepull.set_missing(vec![]);
        assert!(!render(&r, Some(now), now).contains("id=\"states\""));
    }

    #[test]
    fn hidden_images_are_a_fainter_segment_past_the_reported_ones() {
        let mut full = node("full", 50, 50);
        full.runtime.runtime_images = Some(60);
        full.runtime.hidden_images = Some(10);
        full.prepull.set_missing(vec![MissingImage {
            image: "lab:w_1".into(),
            state: MissingState::Hidden,
        }]);
        let mut roomy = node("roomy", 10, 50);
        roomy.runtime.runtime_images = Some(10);
        roomy.runtime.hidden_images = Some(0);
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
