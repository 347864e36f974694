//! `check --prune-plan`: each node's pruning plan from saved agent answers, the
//! exporter's view of what is wanted there, and the agent's `prune` settings.
//! Pure: the answers are read by the caller.

use crate::analysis::Report;
use crate::analysis::prune::{
    self, Decision, ImageFacts, Plan, PruneSettings, trusted_wanted, wanted_on_node,
};
use crate::analysis::runtime::AgentReport;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// One node's plan, or why there is none.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_plan: Option<String>,
}

/// The plan of every answer, in the order of the answers.
pub fn plans(report: &Report, answers: &[AgentReport], settings: &PruneSettings) -> Vec<NodePlan> {
    answers
        .iter()
        .map(|a| {
            let no_plan = |why: &str| NodePlan {
                node: a.node.clone(),
                plan: None,
                no_plan: Some(why.to_string()),
            };
            let Some(saved) = &a.prune else {
                return no_plan(
                    "the answer has no pruning plan, so which images containers use is \
                     unknown: enable pruning on the agent (a dry run is enough)",
                );
            };
            let facts: HashMap<&str, ImageFacts> = saved
                .images
                .iter()
                .map(|i| {
                    let created = i
                        .created
                        .as_deref()
                        .and_then(|c| humantime::parse_rfc3339_weak(c).ok());
                    (
                        i.id.as_str(),
                        ImageFacts {
                            in_use: i.in_use,
                            pinned: i.pinned,
                            sandbox: i.sandbox,
                            created,
                        },
                    )
                })
                .collect();
            // An image the saved plan does not know is treated as in use: its use
            // was not seen.
            let images: Vec<_> = a
                .images
                .iter()
                .map(|i| {
                    let f = facts.get(i.id.as_str()).copied().unwrap_or(ImageFacts {
                        in_use: true,
                        ..ImageFacts::default()
                    });
                    (i.clone(), f)
                })
                .collect();
            let Some(answer) = wanted_on_node(report, &a.node) else {
                return no_plan("the node is not in the node list");
            };
            let wanted = trusted_wanted(&answer, &a.node).map_err(|e| e.to_string());
            let refs = wanted.as_deref().map_err(String::as_str);
            NodePlan {
                node: a.node.clone(),
                plan: Some(prune::plan(
                    &images,
                    refs,
                    Some(answer.max_images),
                    settings,
                )),
                no_plan: None,
            }
        })
        .collect()
}

/// The plans as text: per node, the removals in order, then why the rest stay.
pub fn render(plans: &[NodePlan]) -> String {
    let mut out = String::new();
    if plans.is_empty() {
        out.push_str("No agent answers: nothing to plan.\n");
    }
    for p in plans {
        let Some(plan) = &p.plan else {
            let _ = writeln!(
                out,
                "{}: no plan: {}\n",
                p.node,
                p.no_plan.as_deref().unwrap_or("")
            );
            continue;
        };
        let target = plan
            .target
            .map_or("none (unlimited or unknown cap)".to_string(), |t| {
                t.to_string()
            });
        let _ = writeln!(
            out,
            "{}: holds {} images, target {target}: removes {} ({} bytes), defers {}",
            p.node, plan.held, plan.remove, plan.remove_bytes, plan.deferred
        );
        if let Some(b) = &plan.blocked {
            let _ = writeln!(out, "  nothing is removed: {b}");
        }
        if plan.short_by > 0 {
            let _ = writeln!(
                out,
                "  protected images keep it {} above the target",
                plan.short_by
            );
        }
        for i in &plan.images {
            let action = match i.decision {
                Decision::Remove => "remove",
                Decision::Defer => "defer",
                Decision::Keep(_) => "keep",
            };
            let _ = writeln!(
                out,
                "  {action:<6} {}  {} bytes{}  {}",
                crate::text::shown(&i.name),
                i.size,
                i.created
                    .as_deref()
                    .map(|c| format!(", created {c}"))
                    .unwrap_or_default(),
                i.reason
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::{CapReport, ImageReport, NodeReport, PrepullReport};
    use crate::analysis::runtime::RuntimeImage;

    fn report() -> Report {
        Report {
            nodes: vec![NodeReport {
                name: "n1".into(),
                cap: CapReport {
                    max_images: 4,
                    ..CapReport::default()
                },
                prepull: PrepullReport {
                    wanted: vec![0],
                    ..PrepullReport::default()
                },
                ..NodeReport::default()
            }],
            images: vec![ImageReport {
                image: "x.test/app:w".into(),
                sources: vec![],
                nodes: 1,
                eligible_nodes: 1,
            }],
            eligible_nodes: 1,
            sources: vec![],
            menu: None,
        }
    }

    fn answer(node: &str, with_plan: bool) -> AgentReport {
        let images: Vec<RuntimeImage> = ["old", "w", "used", "new"]
            .iter()
            .map(|t| RuntimeImage {
                id: format!("sha256:{t}"),
                repo_tags: vec![format!("x.test/app:{t}")],
                repo_digests: vec![],
                size: 10,
            })
            .collect();
        let facts: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let f = ImageFacts {
                    in_use: img.id == "sha256:used",
                    pinned: false,
                    sandbox: false,
                    created: Some(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(i as u64 * 100),
                    ),
                };
                (img.clone(), f)
            })
            .collect();
        // What the agent saved: its own plan, made with no wanted images known.
        let saved = prune::plan(&facts, Err("unknown"), None, &PruneSettings::default());
        AgentReport {
            node: node.into(),
            collected_at: "2026-01-01T00:00:00Z".into(),
            images,
            image_fs_used_bytes: None,
            prune: with_plan.then_some(saved),
        }
    }

    #[test]
    fn the_check_plans_again_with_the_clusters_wanted_images() {
        let settings = PruneSettings {
            target: Some(2),
            ..PruneSettings::default()
        };
        let plans = plans(
            &report(),
            &[
                answer("n1", true),
                answer("n1", false),
                answer("gone", true),
            ],
            &settings,
        );
        let plan = plans[0].plan.as_ref().unwrap();
        let removed: Vec<&str> = plan.removals().map(|i| i.name.as_str()).collect();
        // "w" is wanted, "used" in use: the two others go, oldest first.
        assert_eq!(removed, ["x.test/app:old", "x.test/app:new"]);
        assert!(
            plans[1]
                .no_plan
                .as_deref()
                .unwrap()
                .contains("no pruning plan")
        );
        assert!(
            plans[2]
                .no_plan
                .as_deref()
                .unwrap()
                .contains("not in the node list")
        );
        let text = render(&plans);
        assert!(
            text.contains("n1: holds 4 images, target 2: removes 2 (20 bytes), defers 0"),
            "{text}"
        );
        assert!(text.contains("keep   x.test/app:w  10 bytes"), "{text}");
        assert!(
            text.contains("wanted on this node as x.test/app:w"),
            "{text}"
        );
        assert!(text.contains("a container on the node uses it"), "{text}");
        assert!(
            text.contains("gone: no plan: the node is not in the node list"),
            "{text}"
        );
        // Without a target of its own: the cap in force (4) minus 5, so 0.
        let plans = plans_default();
        assert_eq!(plans[0].plan.as_ref().unwrap().target, Some(0));
    }

    fn plans_default() -> Vec<NodePlan> {
        plans(&report(), &[answer("n1", true)], &PruneSettings::default())
    }
}
