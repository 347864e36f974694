//! Nublado's spawner menu: which images it shows, and why each one it leaves out
//! is left out.
//!
//! Nublado shows an image in the menu only when it is in `images.prepulled`: on
//! every node eligible for the lab, as Nublado reads the nodes' capped
//! `status.images`. For an image it lists as pending, the exporter's own verdicts
//! on the nodes Nublado counts as missing tell why:
//!
//! - `hidden_by_cap`: every such node is at its cap and holds the image where
//!   the API cannot show it (`hidden`), or the image can never be listed there
//!   (`unlistable`). The menu leaves it out as long as the cap holds, whatever the
//!   prepuller does.
//! - `maybe_hidden_by_cap`: every such node is at its cap, and on some the image
//!   is `unverifiable`.
//! - `pulling`: some such node really lacks it (`absent`), or shows it already
//!   where Nublado has yet to see it; the menu shows it when the pulls finish and
//!   Nublado reads the nodes again.

use super::reference::ImageRef;
use super::verdict::{MissingImage, MissingState};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// What Nublado's answer says of its menu: each image it prepulls, as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Menu {
    pub images: Vec<MenuImage>,
}

/// One image of `images.prepulled` or `images.pending`.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuImage {
    /// As wanted (the reference with Nublado's digest).
    pub image: ImageRef,
    /// Nublado's display name (`Weekly 2024_10`), when it gives one.
    pub name: Option<String>,
    /// In `images.prepulled`: shown in the menu.
    pub prepulled: bool,
    /// Nublado's `size`, when it knows it.
    pub size: Option<u64>,
    /// The nodes Nublado counts as missing the image; `None` when the answer's
    /// lists were too long to keep (the exporter's own missing nodes stand in).
    pub missing: Option<Vec<Arc<str>>>,
}

super::label_values! {
    /// Where an image Nublado prepulls stands with the spawner menu: the `state`
    /// label of `imagecap_menu_images`.
    pub enum MenuState {
        Shown = "shown",
        HiddenByCap = "hidden_by_cap",
        MaybeHiddenByCap = "maybe_hidden_by_cap",
        Pulling = "pulling",
    }
}

impl Serialize for MenuState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An image the menu leaves out because of the cap (for sure or maybe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MenuHidden {
    pub image: String,
    /// Nublado's display name, else the reference.
    pub name: String,
    pub state: MenuState,
    /// The nodes that keep it out of the menu.
    pub nodes: Vec<String>,
}

/// The spawner menu: how many images are in each state, and those hidden by the
/// cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MenuReport {
    pub shown: u32,
    pub hidden_by_cap: u32,
    pub maybe_hidden_by_cap: u32,
    pub pulling: u32,
    /// The images hidden or maybe hidden by the cap, in Nublado's order.
    pub hidden: Vec<MenuHidden>,
}

impl MenuReport {
    pub fn count(&self, state: MenuState) -> u32 {
        match state {
            MenuState::Shown => self.shown,
            MenuState::HiddenByCap => self.hidden_by_cap,
            MenuState::MaybeHiddenByCap => self.maybe_hidden_by_cap,
            MenuState::Pulling => self.pulling,
        }
    }
}

/// How one node stands with a pending image.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NodeVerdict {
    /// Hidden or unlistable at the cap.
    Cap,
    /// Unverifiable at the cap.
    MaybeCap,
    /// Absent, or seen by the exporter already.
    Pulling,
}

/// The menu's state for each image of `menu`, from the exporter's verdicts:
/// each node's name and the wanted images it misses (sorted by name, as the
/// report has them).
pub fn menu_report(menu: &Menu, nodes: &[(&str, &[MissingImage])]) -> MenuReport {
    // (node, image) -> state, for every missing pair.
    let mut states: HashMap<(&str, &str), MissingState> = HashMap::new();
    for (name, missing) in nodes {
        for m in *missing {
            states.insert((name, &*m.image), m.state);
        }
    }
    let mut report = MenuReport::default();
    for image in &menu.images {
        if image.prepulled {
            report.shown += 1;
            continue;
        }
        let name = image.image.to_string();
        let verdict = |node: &str| match states.get(&(node, name.as_str())) {
            Some(MissingState::Hidden | MissingState::Unlistable) => NodeVerdict::Cap,
            Some(MissingState::Unverifiable) => NodeVerdict::MaybeCap,
            Some(MissingState::Absent) | None => NodeVerdict::Pulling,
        };
        let own: Vec<&str>;
        let missing: Vec<&str> = match &image.missing {
            Some(list) => list.iter().map(|n| &**n).collect(),
            None => {
                own = nodes
                    .iter()
                    .filter(|(_, missing)| missing.iter().any(|m| *m.image == *name))
                    .map(|(n, _)| *n)
                    .collect();
                own
            }
        };
        let worst = missing
            .iter()
            .map(|n| verdict(n))
            .max()
            .unwrap_or(NodeVerdict::Pulling);
        let state = match worst {
            NodeVerdict::Cap => MenuState::HiddenByCap,
            NodeVerdict::MaybeCap => MenuState::MaybeHiddenByCap,
            NodeVerdict::Pulling => MenuState::Pulling,
        };
        match state {
            MenuState::HiddenByCap => report.hidden_by_cap += 1,
            MenuState::MaybeHiddenByCap => report.maybe_hidden_by_cap += 1,
            _ => report.pulling += 1,
        }
        if state != MenuState::Pulling {
            report.hidden.push(MenuHidden {
                name: image.name.clone().unwrap_or_else(|| name.clone()),
                image: name,
                state,
                nodes: missing.iter().map(|n| n.to_string()).collect(),
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's name and the images it misses, each in its state.
    fn node(
        name: &'static str,
        missing: &[(&str, MissingState)],
    ) -> (&'static str, Vec<MissingImage>) {
        let missing = missing
            .iter()
            .map(|(image, state)| MissingImage {
                image: (*image).into(),
                state: *state,
            })
            .collect();
        (name, missing)
    }

    /// What `menu_report` takes of the nodes.
    fn view<'a>(nodes: &'a [(&'a str, Vec<MissingImage>)]) -> Vec<(&'a str, &'a [MissingImage])> {
        nodes.iter().map(|(n, m)| (*n, m.as_slice())).collect()
    }

    fn image(reference: &str, prepulled: bool, missing: Option<&[&str]>) -> MenuImage {
        MenuImage {
            image: ImageRef::parse(reference).unwrap(),
            name: Some(format!("Name of {reference}")),
            prepulled,
            size: None,
            missing: missing.map(|m| m.iter().map(|n| Arc::from(*n)).collect()),
        }
    }

    const A: &str = "ghcr.io/x/lab:w_1";
    const B: &str = "ghcr.io/x/lab:w_2";
    const C: &str = "ghcr.io/x/lab:w_3";
    const D: &str = "ghcr.io/x/lab:w_4";

    #[test]
    fn each_pending_image_gets_the_reason_its_nodes_give() {
        use MissingState::*;
        let nodes = [
            node(
                "n1",
                &[(A, Hidden), (B, Unlistable), (C, Unverifiable), (D, Absent)],
            ),
            node("n2", &[(A, Unlistable), (B, Unverifiable), (C, Hidden)]),
            node("n3", &[]),
        ];
        let menu = Menu {
            images: vec![
                image("ghcr.io/x/lab:r1", true, Some(&[])),
                image(A, false, Some(&["n1", "n2"])),
                image(B, false, Some(&["n1", "n2"])),
                image(C, false, Some(&["n1", "n2"])),
                image(D, false, Some(&["n1"])),
                // Nublado has yet to see it where the exporter does.
                image(D, false, Some(&["n3"])),
                // A node the exporter does not know.
                image(A, false, Some(&["gone"])),
            ],
        };
        let r = menu_report(&menu, &view(&nodes));
        assert_eq!(
            (r.shown, r.hidden_by_cap, r.maybe_hidden_by_cap, r.pulling),
            (1, 1, 2, 3)
        );
        let hidden: Vec<(&str, MenuState)> = r
            .hidden
            .iter()
            .map(|h| (h.image.as_str(), h.state))
            .collect();
        assert_eq!(
            hidden,
            [
                (A, MenuState::HiddenByCap),
                (B, MenuState::MaybeHiddenByCap),
                (C, MenuState::MaybeHiddenByCap),
            ]
        );
        assert_eq!(r.hidden[0].name, format!("Name of {A}"));
        assert_eq!(r.hidden[0].nodes, ["n1", "n2"]);
        assert_eq!(r.count(MenuState::Pulling), 3);
    }

    #[test]
    fn without_nubladoes_lists_the_exporters_own_missing_nodes_stand_in() {
        let nodes = [
            node("n1", &[(A, MissingState::Hidden)]),
            node("n2", &[(B, MissingState::Absent)]),
        ];
        let menu = Menu {
            images: vec![
                image(A, false, None),
                image(B, false, None),
                image(C, false, None),
            ],
        };
        let r = menu_report(&menu, &view(&nodes));
        assert_eq!(
            (r.shown, r.hidden_by_cap, r.maybe_hidden_by_cap, r.pulling),
            (0, 1, 0, 2),
            "C: pending, yet missing nowhere the exporter looks: pulling"
        );
        assert_eq!(r.hidden[0].nodes, ["n1"]);
    }
}
