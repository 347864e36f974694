//! `check`'s report for people: plain-text tables.

use crate::analysis::menu::{MenuReport, MenuState};
use crate::analysis::report::{CapSource, ImageReport, MissingState, NodeReport, SourceReport};
use crate::analysis::{NodeStatus, Report};
use crate::text::{escape_controls, shown};
use std::fmt::Write;

/// Decimal gigabytes, as the rule of thumb counts them.
fn gb(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.0} GB", b as f64 / 1e9),
        None => "-".into(),
    }
}

fn cap(n: &NodeReport) -> String {
    match (n.cap.max_images, n.cap.max_images_source) {
        (-1, CapSource::Inferred) => "unlimited*".into(),
        (-1, _) => "unlimited".into(),
        (c, _) => c.to_string(),
    }
}

/// Left-aligned columns, two spaces apart. Free text from outside is cut where it
/// is put in a cell ([`shown`]); here every cell loses its control characters, so
/// that no name or comment can forge a line or send a terminal sequence.
fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| escape_controls(c, usize::MAX).into_owned())
                .collect()
        })
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The whole report: the node table, the wanted images, the sources, the spawner
/// menu when Nublado is read, then the totals and the notes under them.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    render_nodes(&mut out, &report.nodes);
    render_images(&mut out, &report.images);
    render_sources(&mut out, &report.sources);
    if let Some(menu) = &report.menu {
        out.push('\n');
        out.push_str(&render_menu(menu));
    }
    out.push('\n');
    render_totals(&mut out, report);
    render_notes(&mut out, report);
    out
}

/// The node table: a header, then one row per node ([`node_row`]).
fn render_nodes(out: &mut String, nodes: &[NodeReport]) {
    let mut rows = vec![
        [
            "NODE",
            "IMAGES/CAP",
            "HIDDEN",
            "RATIO",
            "STATUS",
            "EPHEMERAL",
            "RECOMMENDED CAP",
            "MISSING WANTED IMAGES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(nodes.iter().map(node_row));
    out.push_str(&table(&rows));
}

/// One node's cells in the node table: name, images against the cap, hidden
/// images, ratio, status, ephemeral storage, recommended cap and the missing
/// wanted images ([`missing_cell`]).
fn node_row(n: &NodeReport) -> Vec<String> {
    let status = match (n.status(), &n.prepull.not_eligible_reason) {
        // The one status that needs action stands out in a terminal.
        (NodeStatus::AtCap, _) => "AT CAP".to_string(),
        (NodeStatus::NotEligible, Some(reason)) => {
            format!("not eligible ({})", shown(reason))
        }
        (other, _) => other.as_str().to_string(),
    };
    vec![
        shown(&n.name).into_owned(),
        format!("{}/{}", n.cap.image_count, cap(n)),
        // Runtime images the API does not show; "-" without an agent report.
        n.runtime
            .hidden_images
            .map_or("-".into(), |h| h.to_string()),
        if n.cap.max_images > 0 {
            format!("{:.0}%", n.cap.cap_ratio * 100.0)
        } else {
            "-".into()
        },
        status,
        gb(n.storage.ephemeral_storage_capacity_bytes),
        n.storage
            .recommended_max_images
            .map_or("-".into(), |r| r.to_string()),
        missing_cell(n),
    ]
}

/// A node's missing wanted images: how many, in which state when they all share
/// one, else each image with its own state; "-" when none is missing.
fn missing_cell(n: &NodeReport) -> String {
    match n.prepull.missing.first() {
        None => "-".into(),
        Some(first) if n.prepull.missing.iter().all(|m| m.state == first.state) => format!(
            "{} ({}): {}",
            n.prepull.missing.len(),
            first.state.as_str(),
            n.prepull
                .missing_images
                .iter()
                .map(|i| shown(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(_) => {
            let each: Vec<String> = n
                .prepull
                .missing
                .iter()
                .map(|m| format!("{} ({})", shown(&m.image), m.state.as_str()))
                .collect();
            format!("{}: {}", n.prepull.missing.len(), each.join(", "))
        }
    }
}

/// The wanted images table: each image, on how many eligible nodes it is, and
/// which sources want it. Only when some image is wanted.
fn render_images(out: &mut String, images: &[ImageReport]) {
    if images.is_empty() {
        return;
    }
    out.push('\n');
    let mut rows = vec![vec![
        "WANTED IMAGE".to_string(),
        "ON ELIGIBLE NODES".to_string(),
        "WANTED BY".to_string(),
    ]];
    for i in images {
        let by: Vec<&str> = i.sources.iter().map(|s| s.as_str()).collect();
        rows.push(vec![
            shown(&i.image).into_owned(),
            format!("{}/{}", i.nodes, i.eligible_nodes),
            by.join(","),
        ]);
    }
    out.push_str(&table(&rows));
}

/// The sources table: each source of wanted images, how many it lists, and
/// whether its last read worked. Only when there are sources.
fn render_sources(out: &mut String, sources: &[SourceReport]) {
    if sources.is_empty() {
        return;
    }
    out.push('\n');
    let mut rows = vec![["SOURCE", "IMAGES", "READ"].map(String::from).to_vec()];
    for s in sources {
        rows.push(vec![
            shown(&s.source.to_string()).into_owned(),
            s.images.to_string(),
            if s.up {
                "ok"
            } else {
                "FAILED (last list kept)"
            }
            .to_string(),
        ]);
    }
    out.push_str(&table(&rows));
}

/// The totals line (nodes, eligible, at the cap, missing wanted images), and the
/// footnote for the `*` of an inferred cap when some node has one.
fn render_totals(out: &mut String, report: &Report) {
    let at_cap = report.nodes.iter().filter(|n| n.cap.at_cap).count();
    let missing = report
        .nodes
        .iter()
        .filter(|n| !n.prepull.missing_images.is_empty())
        .count();
    let _ = writeln!(
        out,
        "{} nodes, {} eligible for prepulling; {} at the image cap; {} missing wanted images.",
        report.nodes.len(),
        report.eligible_nodes,
        at_cap,
        missing
    );
    if report
        .nodes
        .iter()
        .any(|n| n.cap.max_images_source == CapSource::Inferred)
    {
        out.push_str("* reports more images than the default cap, so its kubelet runs with a larger cap or none.\n");
    }
}

/// The notes after the totals, each only when it applies: wanted images hidden by
/// the cap, the prepull loop per source, nodes without a fresh agent report, and
/// the remedy for nodes at the cap.
fn render_notes(out: &mut String, report: &Report) {
    let hidden: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| {
            n.prepull
                .missing
                .iter()
                .any(|m| m.state == MissingState::Hidden)
        })
        .map(|n| shown(&n.name))
        .collect();
    if !hidden.is_empty() {
        let _ = writeln!(
            out,
            "Wanted images are on {} node(s) but hidden from the API by the cap ({}): prepullers \
             pull them again and spawner menus leave them out.",
            hidden.len(),
            hidden.join(", ")
        );
    }
    let looping: Vec<String> = report
        .sources
        .iter()
        .filter(|s| s.loop_pairs > 0)
        .map(|s| format!("{} {}", s.loop_pairs, s.source))
        .collect();
    if !looping.is_empty() {
        let _ = writeln!(
            out,
            "The prepullers pull again, on every pass and for nothing, wanted images that nodes at \
             their cap hold hidden or can never list (pairs by source: {}).",
            looping.join(", ")
        );
    }
    if report
        .nodes
        .iter()
        .any(|n| n.runtime.agent_up == Some(false))
    {
        out.push_str(
            "HIDDEN is \"-\" where no fresh node-agent report came in; missing images there stay \
             unverifiable at the cap.\n",
        );
    }
    if report.nodes.iter().any(|n| n.cap.at_cap) {
        out.push_str(
            "Nodes at the cap hide images from the API. Set nodeStatusMaxImages: -1 (or about a third \
             of the node's ephemeral storage in GB, see RECOMMENDED CAP) in the kubelet config and \
             restart the kubelet.\n",
        );
    }
}

/// The spawner menu: how many images Nublado shows and leaves out, and each one
/// the cap keeps out, by its display name.
pub fn render_menu(menu: &MenuReport) -> String {
    let mut rows = vec![vec!["SPAWNER MENU".to_string(), "IMAGES".to_string()]];
    for &state in MenuState::ALL {
        let label = match state {
            MenuState::Shown => "shown",
            MenuState::HiddenByCap => "hidden by the cap",
            MenuState::MaybeHiddenByCap => "maybe hidden by the cap",
            MenuState::Pulling => "pulling (shown when the pulls finish)",
        };
        rows.push(vec![label.to_string(), menu.count(state).to_string()]);
    }
    let mut out = table(&rows);
    if !menu.hidden.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["LEFT OUT OF THE MENU", "STATE", "IMAGE", "AT-CAP NODES"]
                .map(String::from)
                .to_vec(),
        ];
        for h in &menu.hidden {
            rows.push(vec![
                shown(&h.name).into_owned(),
                h.state.to_string(),
                shown(&h.image).into_owned(),
                shown(&h.nodes.join(", ")).into_owned(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::fixtures::{self, node};

    #[test]
    fn table_shows_each_node_and_the_remedy() {
        let r = fixtures::report(
            vec![
                node("full", 50, 50)
                    .missing(&["x:1"], MissingState::Unverifiable)
                    .build(),
                node("big", 137, -1).cap_source(CapSource::Inferred).build(),
            ],
            vec![ImageReport {
                image: "x:1".into(),
                sources: vec![],
                nodes: 1,
                eligible_nodes: 2,
            }],
        );
        let t = render_table(&r);
        let full = t.lines().find(|l| l.starts_with("full")).unwrap();
        assert!(
            full.contains("50/50") && full.contains("100%") && full.contains("AT CAP"),
            "{full}"
        );
        assert!(full.contains("1100 GB") && full.contains("367"), "{full}");
        assert!(full.contains("1 (unverifiable): x:1"), "{full}");
        let big = t.lines().find(|l| l.starts_with("big")).unwrap();
        assert!(big.contains("137/unlimited*"), "{big}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("x:1 ") && l.ends_with(" 1/2")),
            "{t}"
        );
        assert!(t.contains("nodeStatusMaxImages: -1"));
        assert!(t.contains("1 at the image cap; 1 missing wanted images"));
    }

    #[test]
    fn free_text_cannot_forge_lines_or_reach_the_terminal() {
        let forged = "evil\nforged   1/1  ok\x1b[31m";
        let mut cordoned = node(forged, 5, 50).build();
        cordoned.prepull.eligible = false;
        cordoned.prepull.not_eligible_reason = Some("disk\r\n\x1b]0;title\x07".into());
        let mut hidden = node(&format!("{}\n", "h".repeat(1 << 20)), 50, 50)
            .missing(&["img\n:1"], MissingState::Hidden)
            .build();
        hidden.runtime.hidden_images = Some(1);
        let r = Report {
            nodes: vec![cordoned, hidden],
            images: vec![],
            eligible_nodes: 1,
            sources: vec![],
            menu: None,
        };
        let t = render_table(&r);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("evil\\nforged   1/1  ok\\u{1b}[31m"), "{t}");
        assert!(t.contains("not eligible (disk\\r\\n\\u{1b}]0;title\\u{7})"));
        assert!(!t.lines().any(|l| l.starts_with("forged")), "{t}");
        assert!(t.contains("img\\n:1"));
        // The 1 MB name is cut, in the table and in the line about hidden images.
        assert!(t.len() < 8 * 1024, "{} bytes", t.len());
        assert_eq!(t.matches("...(1048577 bytes)").count(), 2, "{t}");
    }

    #[test]
    fn no_remedy_when_nothing_is_at_the_cap() {
        let r = fixtures::report(vec![node("ok", 3, 50).build()], vec![]);
        let t = render_table(&r);
        assert!(!t.contains("nodeStatusMaxImages"));
        assert!(!t.lines().any(|l| l.starts_with("WANTED IMAGE")));
    }

    #[test]
    fn hidden_images_have_a_column_and_a_line() {
        let mut full = node("full", 50, 50)
            .missing(&["lab:w_1"], MissingState::Hidden)
            .missing(&["lab:w_2"], MissingState::Absent)
            .build();
        full.runtime.hidden_images = Some(10);
        full.runtime.agent_up = Some(true);
        let mut blind = node("blind", 50, 50).build();
        blind.runtime.agent_up = Some(false);
        let r = Report {
            nodes: vec![full, blind],
            images: vec![],
            eligible_nodes: 2,
            sources: vec![],
            menu: None,
        };
        let t = render_table(&r);
        let header = t.lines().next().unwrap();
        assert!(header.contains("IMAGES/CAP  HIDDEN  RATIO"), "{header}");
        let full = t.lines().find(|l| l.starts_with("full")).unwrap();
        assert!(full.contains("50/50       10"), "{full}");
        assert!(
            full.ends_with("2: lab:w_1 (hidden), lab:w_2 (absent)"),
            "{full}"
        );
        let blind = t.lines().find(|l| l.starts_with("blind")).unwrap();
        assert!(blind.contains("50/50       -"), "{blind}");
        assert!(t.contains("hidden from the API by the cap (full)"), "{t}");
        assert!(t.contains("no fresh node-agent report"), "{t}");
    }
}
