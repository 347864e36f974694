//! Which nodes an image is wanted on, decided as the prepuller that wants it decides.
//!
//! - The configuration's images and patterns: Nublado's rule. A node is eligible
//!   when it matches `prepull.nodeSelector`, is not cordoned, and every
//!   `NoSchedule`/`NoExecute` taint is tolerated by `prepull.tolerations`
//!   (`PreferNoSchedule` is ignored).
//! - Nublado: its own `eligible` flag per node name.
//! - kube-fledged: a cache group's node selector (every node without one).
//! - DaemonSet prepullers: where the DaemonSet's pods can run: its `nodeSelector`,
//!   required node affinity, and its tolerations (plus those the DaemonSet
//!   controller adds to every pod) against the node's taints.

use super::intern::{SharedLabel, intern_label};
use super::selector::LabelSelector;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The taint a cordoned node carries (and is treated as carrying, from
/// `spec.unschedulable`, when it does not list it).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// A node's labels: sorted by key, each (key, value) pair shared by every node
/// that has it ([`intern_label`]): 8 bytes a label on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(Box<[SharedLabel]>);

impl NodeLabels {
    pub fn new(pairs: Vec<(Arc<str>, Arc<str>)>) -> NodeLabels {
        NodeLabels::from_strs(pairs.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// The labels of `pairs`; of two values of one key, the first in order.
    pub fn from_strs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> NodeLabels {
        let mut labels: Vec<SharedLabel> =
            pairs.into_iter().map(|(k, v)| intern_label(k, v)).collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        NodeLabels(labels.into_boxed_slice())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.0.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    pub fn matches(&self, selector: &LabelSelector) -> bool {
        selector.matches_by(|k| self.get(k))
    }
}

/// A node taint. `effect` is kept as written (`NoSchedule`, `PreferNoSchedule`,
/// `NoExecute`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Taint {
    pub key: Arc<str>,
    pub value: Option<Arc<str>>,
    pub effect: Arc<str>,
}

impl Taint {
    /// Whether the taint keeps pods that do not tolerate it off the node.
    pub fn repels(&self) -> bool {
        matches!(self.effect.as_ref(), "NoSchedule" | "NoExecute")
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}:{}",
            self.key,
            self.value.as_deref().unwrap_or(""),
            self.effect
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

/// Why a toleration's API fields are not a valid toleration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TolerationError {
    #[error("operator {0:?} is not Equal or Exists")]
    Operator(String),
    #[error("a value must be empty when the operator is Exists")]
    ValueWithExists,
    #[error("an empty key needs the operator Exists")]
    EmptyKey,
    #[error("effect {0:?} is not NoSchedule, PreferNoSchedule or NoExecute")]
    Effect(String),
}

/// A node selector requirement whose operator is none of Kubernetes'.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node selector operator {0:?} is unknown")]
pub struct UnknownOperator(pub String);

/// A Kubernetes toleration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    /// `None`: every key (only with `Exists`).
    pub key: Option<String>,
    pub operator: TolerationOperator,
    pub value: String,
    /// `None`: every effect.
    pub effect: Option<String>,
    /// `tolerationSeconds`: a pod tolerating a `NoExecute` taint only this long is
    /// evicted after it. Scheduling ignores it; Nublado's rule does not (see
    /// [`Toleration::lasting`]).
    pub seconds: Option<i64>,
}

impl Toleration {
    /// Builds a toleration from its API fields, as the API server validates them.
    pub fn new(
        key: Option<&str>,
        operator: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Result<Toleration, TolerationError> {
        let key = key.filter(|k| !k.is_empty()).map(str::to_string);
        let operator = match operator.unwrap_or("") {
            "" | "Equal" => TolerationOperator::Equal,
            "Exists" => TolerationOperator::Exists,
            other => return Err(TolerationError::Operator(other.to_string())),
        };
        let value = value.unwrap_or("").to_string();
        if operator == TolerationOperator::Exists && !value.is_empty() {
            return Err(TolerationError::ValueWithExists);
        }
        if key.is_none() && operator != TolerationOperator::Exists {
            return Err(TolerationError::EmptyKey);
        }
        let effect = match effect.unwrap_or("") {
            "" => None,
            e @ ("NoSchedule" | "PreferNoSchedule" | "NoExecute") => Some(e.to_string()),
            other => return Err(TolerationError::Effect(other.to_string())),
        };
        Ok(Toleration {
            key,
            operator,
            value,
            effect,
            seconds: None,
        })
    }

    /// With `tolerationSeconds`. The API server accepts it only with the effect
    /// `NoExecute` in a pod; Nublado's configuration takes it with any effect (its
    /// own test data has one on `NoSchedule`) and ignores such a toleration, so it
    /// is taken as given here.
    pub fn with_seconds(self, seconds: Option<i64>) -> Toleration {
        Toleration { seconds, ..self }
    }

    /// Whether the toleration lasts: Nublado ignores one with `tolerationSeconds`
    /// when it decides where to prepull (`_toleration_matches`), since a lab pod
    /// on that node would be evicted when the time runs out.
    pub fn lasting(&self) -> bool {
        self.seconds.is_none()
    }

    /// From a `k8s_openapi` toleration (a DaemonSet's pod template).
    pub fn from_api(
        t: &k8s_openapi::api::core::v1::Toleration,
    ) -> Result<Toleration, TolerationError> {
        Toleration::new(
            t.key.as_deref(),
            t.operator.as_deref(),
            t.value.as_deref(),
            t.effect.as_deref(),
        )
        .map(|tol| tol.with_seconds(t.toleration_seconds))
    }

    fn exists(key: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.to_string()),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(effect.to_string()),
            seconds: None,
        }
    }

    /// The Kubernetes rule (`ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self
            .effect
            .as_deref()
            .is_some_and(|e| e != taint.effect.as_ref())
        {
            return false;
        }
        match &self.key {
            None => true,
            Some(k) if k.as_str() != taint.key.as_ref() => false,
            Some(_) => match self.operator {
                TolerationOperator::Exists => true,
                TolerationOperator::Equal => self.value == taint.value.as_deref().unwrap_or(""),
            },
        }
    }
}

/// The first taint that keeps a pod with `tolerations` off the node: repelling
/// (`NoSchedule`/`NoExecute`) and tolerated by none of them.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.repels())
        .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// The tolerations the DaemonSet controller adds to every DaemonSet pod
/// (`AddOrUpdateDaemonPodTolerations`); `network-unavailable` only with host
/// networking.
pub fn daemonset_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut out = vec![
        Toleration::exists("node.kubernetes.io/not-ready", "NoExecute"),
        Toleration::exists("node.kubernetes.io/unreachable", "NoExecute"),
        Toleration::exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        Toleration::exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        Toleration::exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        Toleration::exists(UNSCHEDULABLE_TAINT, "NoSchedule"),
    ];
    if host_network {
        out.push(Toleration::exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One `matchExpressions` or `matchFields` entry of a node selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: NodeSelectorOperator,
    pub values: Vec<String>,
}

impl NodeSelectorRequirement {
    pub fn new(key: &str, operator: &str, values: &[String]) -> Result<Self, UnknownOperator> {
        let operator = match operator {
            "In" => NodeSelectorOperator::In,
            "NotIn" => NodeSelectorOperator::NotIn,
            "Exists" => NodeSelectorOperator::Exists,
            "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
            "Gt" => NodeSelectorOperator::Gt,
            "Lt" => NodeSelectorOperator::Lt,
            other => return Err(UnknownOperator(other.to_string())),
        };
        Ok(NodeSelectorRequirement {
            key: key.to_string(),
            operator,
            values: values.to_vec(),
        })
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.parse::<i64>().ok();
        match self.operator {
            NodeSelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            NodeSelectorOperator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            NodeSelectorOperator::Exists => value.is_some(),
            NodeSelectorOperator::DoesNotExist => value.is_none(),
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                let (Some(v), [bound]) = (value.and_then(number), self.values.as_slice()) else {
                    return false;
                };
                let Some(bound) = number(bound) else {
                    return false;
                };
                if self.operator == NodeSelectorOperator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A node selector term: every expression on labels and every field requirement
/// (only `metadata.name` exists) must hold. An empty term matches no node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<NodeSelectorRequirement>,
    pub match_fields: Vec<NodeSelectorRequirement>,
}

impl NodeSelectorTerm {
    fn matches(&self, node: &NodeFacts<'_>) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key)))
            && self.match_fields.iter().all(|r| {
                let field = (r.key == "metadata.name").then_some(node.name);
                r.matches(field)
            })
    }
}

/// Where a DaemonSet's pods can run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub node_selector: LabelSelector,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`, any of
    /// which must match; `None` when the DaemonSet has no required node affinity.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    /// The pod template's tolerations and the DaemonSet controller's own.
    pub tolerations: Vec<Toleration>,
}

/// What eligibility is decided on: the parts of a node summary it reads.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub labels: &'a NodeLabels,
    pub taints: &'a [Taint],
    pub unschedulable: bool,
}

impl NodeFacts<'_> {
    /// The taints to schedule against: the listed ones, plus the cordon taint for
    /// a node marked unschedulable that does not list it.
    fn untolerated(&self, tolerations: &[Toleration]) -> Option<Taint> {
        if let Some(t) = untolerated(self.taints, tolerations) {
            return Some(t.clone());
        }
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            value: None,
            effect: "NoSchedule".into(),
        };
        (self.unschedulable
            && !self
                .taints
                .iter()
                .any(|t| t.key.as_ref() == UNSCHEDULABLE_TAINT)
            && !tolerations.iter().any(|t| t.tolerates(&cordon)))
        .then_some(cordon)
    }
}

/// Why a node is not eligible for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotEligible {
    /// Cordoned (`spec.unschedulable`, or the taint it brings).
    Cordoned,
    /// Outside the node selector (or the required node affinity).
    Selector,
    /// A taint that is not tolerated, as `key=value:effect`.
    Taint(String),
    /// Nublado's own comment on the node.
    Nublado(String),
    /// Not listed by the source at all.
    Unlisted,
}

impl fmt::Display for NotEligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotEligible::Cordoned => f.write_str("cordoned"),
            NotEligible::Selector => f.write_str("selector"),
            NotEligible::Taint(t) => write!(f, "taint {t}"),
            NotEligible::Nublado(comment) => f.write_str(comment),
            NotEligible::Unlisted => f.write_str("not listed by the source"),
        }
    }
}

/// How one source decides where its images are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    /// The configuration's rule (Nublado's): selector, not cordoned, every
    /// repelling taint tolerated by a lasting toleration ([`Eligibility::config`]
    /// keeps only those).
    Config {
        selector: LabelSelector,
        tolerations: Vec<Toleration>,
    },
    /// By node name, as the source decided: `Ok` eligible, `Err` why not.
    Named(Arc<HashMap<String, Result<(), String>>>),
    /// Nodes a label selector matches (every node for the empty selector).
    Selector(LabelSelector),
    /// Where a DaemonSet's pods can run.
    Placement(Placement),
}

impl Eligibility {
    /// The configuration's rule: `tolerations` with `tolerationSeconds` tolerate
    /// nothing here, as in Nublado.
    pub fn config(selector: LabelSelector, tolerations: Vec<Toleration>) -> Eligibility {
        Eligibility::Config {
            selector,
            tolerations: tolerations
                .into_iter()
                .filter(Toleration::lasting)
                .collect(),
        }
    }

    pub fn check(&self, node: &NodeFacts<'_>) -> Result<(), NotEligible> {
        match self {
            Eligibility::Config {
                selector,
                tolerations,
            } => {
                if !node.labels.matches(selector) {
                    return Err(NotEligible::Selector);
                }
                match node.untolerated(tolerations) {
                    None => Ok(()),
                    Some(t) if t.key.as_ref() == UNSCHEDULABLE_TAINT => Err(NotEligible::Cordoned),
                    Some(t) => Err(NotEligible::Taint(t.to_string())),
                }
            }
            Eligibility::Named(by_name) => match by_name.get(node.name) {
                Some(Ok(())) => Ok(()),
                Some(Err(comment)) => Err(NotEligible::Nublado(comment.clone())),
                None => Err(NotEligible::Unlisted),
            },
            Eligibility::Selector(selector) => {
                if node.labels.matches(selector) {
                    Ok(())
                } else {
                    Err(NotEligible::Selector)
                }
            }
            Eligibility::Placement(p) => {
                let affinity = p
                    .required_terms
                    .as_ref()
                    .is_none_or(|terms| terms.iter().any(|t| t.matches(node)));
                if !node.labels.matches(&p.node_selector) || !affinity {
                    return Err(NotEligible::Selector);
                }
                match node.untolerated(&p.tolerations) {
                    None => Ok(()),
                    Some(t) if t.key.as_ref() == UNSCHEDULABLE_TAINT => Err(NotEligible::Cordoned),
                    Some(t) => Err(NotEligible::Taint(t.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then_some(s.to_string());
        Toleration::new(
            opt(key).as_deref(),
            opt(op).as_deref(),
            opt(value).as_deref(),
            opt(effect).as_deref(),
        )
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
        NodeLabels::new(
            pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
                .collect(),
        )
    }

    fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LabelSelector::from_map(&map).unwrap()
    }

    #[test]
    fn toleration_matching() {
        let gpu = taint("dedicated", Some("gpu"), "NoSchedule");
        assert!(tol("dedicated", "Equal", "gpu", "NoSchedule").tolerates(&gpu));
        assert!(
            tol("dedicated", "", "gpu", "NoSchedule").tolerates(&gpu),
            "Equal by default"
        );
        assert!(!tol("dedicated", "Equal", "lab", "NoSchedule").tolerates(&gpu));
        assert!(tol("dedicated", "Exists", "", "NoSchedule").tolerates(&gpu));
        assert!(!tol("other", "Exists", "", "").tolerates(&gpu));
        assert!(
            tol("dedicated", "Exists", "", "").tolerates(&gpu),
            "empty effect: all"
        );
        assert!(!tol("dedicated", "Exists", "", "NoExecute").tolerates(&gpu));
        assert!(
            tol("", "Exists", "", "").tolerates(&gpu),
            "empty key with Exists: all"
        );
        assert!(tol("", "Exists", "", "NoSchedule").tolerates(&gpu));
        assert!(!tol("", "Exists", "", "NoExecute").tolerates(&gpu));
        // A taint without a value matches Equal with an empty value.
        let bare = taint("maintenance", None, "NoExecute");
        assert!(tol("maintenance", "Equal", "", "").tolerates(&bare));
    }

    #[test]
    fn invalid_tolerations_are_rejected() {
        assert!(Toleration::new(None, Some("Equal"), Some("x"), None).is_err());
        assert!(Toleration::new(Some("k"), Some("Exists"), Some("x"), None).is_err());
        assert!(Toleration::new(Some("k"), Some("Like"), None, None).is_err());
        assert!(Toleration::new(Some("k"), None, None, Some("NoRun")).is_err());
    }

    #[test]
    fn prefer_no_schedule_is_ignored() {
        let taints = [taint("soft", Some("x"), "PreferNoSchedule")];
        assert_eq!(untolerated(&taints, &[]), None);
        let taints = [taint("hard", Some("x"), "NoExecute")];
        assert_eq!(untolerated(&taints, &[]), Some(&taints[0]));
    }

    fn facts<'a>(
        name: &'a str,
        labels: &'a NodeLabels,
        taints: &'a [Taint],
        cordoned: bool,
    ) -> NodeFacts<'a> {
        NodeFacts {
            name,
            labels,
            taints,
            unschedulable: cordoned,
        }
    }

    #[test]
    fn the_config_rule_is_nubladoes() {
        let rule = Eligibility::Config {
            selector: selector(&[("pool", "lab")]),
            tolerations: vec![tol("dedicated", "Equal", "lab", "NoSchedule")],
        };
        let lab = labels(&[("pool", "lab")]);
        let gpu_taint = [taint("dedicated", Some("gpu"), "NoSchedule")];
        let lab_taint = [taint("dedicated", Some("lab"), "NoSchedule")];
        let soft = [taint("dedicated", Some("gpu"), "PreferNoSchedule")];
        assert_eq!(rule.check(&facts("a", &lab, &[], false)), Ok(()));
        assert_eq!(rule.check(&facts("a", &lab, &lab_taint, false)), Ok(()));
        assert_eq!(rule.check(&facts("a", &lab, &soft, false)), Ok(()));
        assert_eq!(
            rule.check(&facts("a", &lab, &gpu_taint, false)),
            Err(NotEligible::Taint("dedicated=gpu:NoSchedule".into()))
        );
        assert_eq!(
            rule.check(&facts("a", &labels(&[("pool", "gpu")]), &[], false)),
            Err(NotEligible::Selector)
        );
        assert_eq!(
            rule.check(&facts("a", &lab, &[], true)),
            Err(NotEligible::Cordoned),
            "spec.unschedulable alone"
        );
        let cordon = [taint(UNSCHEDULABLE_TAINT, None, "NoSchedule")];
        assert_eq!(
            rule.check(&facts("a", &lab, &cordon, true)),
            Err(NotEligible::Cordoned)
        );
        assert_eq!(
            NotEligible::Taint("dedicated=gpu:NoSchedule".into()).to_string(),
            "taint dedicated=gpu:NoSchedule"
        );
    }

    #[test]
    fn a_toleration_with_seconds_tolerates_nothing_under_the_config_rule() {
        let lab = labels(&[]);
        let draining = [taint("maintenance", Some("yes"), "NoExecute")];
        let timed = tol("maintenance", "Exists", "", "NoExecute").with_seconds(Some(300));
        assert!(!timed.lasting());
        assert!(timed.tolerates(&draining[0]), "the Kubernetes rule");
        let rule = Eligibility::config(LabelSelector::default(), vec![timed.clone()]);
        assert_eq!(
            rule.check(&facts("a", &lab, &draining, false)),
            Err(NotEligible::Taint("maintenance=yes:NoExecute".into())),
            "Nublado's rule: a lab pod would be evicted"
        );
        let lasting = tol("maintenance", "Exists", "", "NoExecute");
        let rule = Eligibility::config(LabelSelector::default(), vec![lasting]);
        assert_eq!(rule.check(&facts("a", &lab, &draining, false)), Ok(()));
        // A DaemonSet's pods are scheduled there all the same.
        let placement = Eligibility::Placement(Placement {
            node_selector: LabelSelector::default(),
            required_terms: None,
            tolerations: vec![timed],
        });
        assert_eq!(placement.check(&facts("a", &lab, &draining, false)), Ok(()));
        // Nublado's own test data sets it on a NoSchedule toleration: ignored too.
        let gpu = [taint("dedicated", Some("gpu"), "NoSchedule")];
        let timed = tol("dedicated", "Equal", "gpu", "NoSchedule").with_seconds(Some(60));
        let rule = Eligibility::config(LabelSelector::default(), vec![timed]);
        assert!(rule.check(&facts("a", &lab, &gpu, false)).is_err());
    }

    #[test]
    fn required_node_affinity() {
        let req = |k: &str, op: &str, vs: &[&str]| {
            let vs: Vec<String> = vs.iter().map(|s| s.to_string()).collect();
            NodeSelectorRequirement::new(k, op, &vs).unwrap()
        };
        let placement = |terms: Vec<NodeSelectorTerm>| {
            Eligibility::Placement(Placement {
                node_selector: LabelSelector::default(),
                required_terms: Some(terms),
                tolerations: daemonset_tolerations(false),
            })
        };
        let zone_a = labels(&[("zone", "a"), ("cores", "16")]);
        let zone_b = labels(&[("zone", "b"), ("cores", "4")]);
        let in_a = NodeSelectorTerm {
            match_expressions: vec![req("zone", "In", &["a"])],
            match_fields: vec![],
        };
        let big = NodeSelectorTerm {
            match_expressions: vec![req("cores", "Gt", &["8"]), req("gpu", "DoesNotExist", &[])],
            match_fields: vec![],
        };
        let named = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req("metadata.name", "In", &["n2"])],
        };
        let p = placement(vec![in_a.clone()]);
        assert_eq!(p.check(&facts("n1", &zone_a, &[], false)), Ok(()));
        assert_eq!(
            p.check(&facts("n2", &zone_b, &[], false)),
            Err(NotEligible::Selector)
        );
        let p = placement(vec![big]);
        assert_eq!(p.check(&facts("n1", &zone_a, &[], false)), Ok(()));
        assert_eq!(
            p.check(&facts("n2", &zone_b, &[], false)),
            Err(NotEligible::Selector)
        );
        // Terms are ORed; fields match the node's name.
        let p = placement(vec![in_a, named]);
        assert_eq!(p.check(&facts("n2", &zone_b, &[], false)), Ok(()));
        assert_eq!(
            p.check(&facts("n3", &zone_b, &[], false)),
            Err(NotEligible::Selector)
        );
        // An empty term matches nothing; no terms at all matches nothing.
        let p = placement(vec![NodeSelectorTerm::default()]);
        assert_eq!(
            p.check(&facts("n1", &zone_a, &[], false)),
            Err(NotEligible::Selector)
        );
        assert!(NodeSelectorRequirement::new("k", "Near", &[]).is_err());
    }

    #[test]
    fn daemonsets_run_on_cordoned_and_pressured_nodes_but_not_tainted_ones() {
        let p = Eligibility::Placement(Placement {
            node_selector: selector(&[("hub", "jupyter")]),
            required_terms: None,
            tolerations: daemonset_tolerations(false),
        });
        let l = labels(&[("hub", "jupyter")]);
        let pressure = [taint(
            "node.kubernetes.io/disk-pressure",
            None,
            "NoSchedule",
        )];
        assert_eq!(p.check(&facts("n", &l, &[], true)), Ok(()), "cordoned");
        assert_eq!(p.check(&facts("n", &l, &pressure, false)), Ok(()));
        let net = [taint(
            "node.kubernetes.io/network-unavailable",
            None,
            "NoSchedule",
        )];
        assert!(
            p.check(&facts("n", &l, &net, false)).is_err(),
            "not host network"
        );
        let gpu = [taint("nvidia.com/gpu", Some("present"), "NoSchedule")];
        assert_eq!(
            p.check(&facts("n", &l, &gpu, false)),
            Err(NotEligible::Taint(
                "nvidia.com/gpu=present:NoSchedule".into()
            ))
        );
        assert_eq!(
            p.check(&facts("n", &labels(&[]), &[], false)),
            Err(NotEligible::Selector)
        );
    }

    #[test]
    fn named_and_selector_rules() {
        let named = Eligibility::Named(Arc::new(HashMap::from([
            ("a".to_string(), Ok(())),
            (
                "b".to_string(),
                Err("Cordoned because of disk problems".to_string()),
            ),
        ])));
        let none = labels(&[]);
        assert_eq!(
            named.check(&facts("a", &none, &[], true)),
            Ok(()),
            "Nublado decides"
        );
        assert_eq!(
            named
                .check(&facts("b", &none, &[], false))
                .unwrap_err()
                .to_string(),
            "Cordoned because of disk problems"
        );
        assert_eq!(
            named.check(&facts("c", &none, &[], false)),
            Err(NotEligible::Unlisted)
        );
        let everyone = Eligibility::Selector(LabelSelector::default());
        assert_eq!(everyone.check(&facts("c", &none, &[], true)), Ok(()));
    }

    #[test]
    fn labels_lookup() {
        let l = labels(&[("b", "2"), ("a", "1"), ("a", "dup")]);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }
}
