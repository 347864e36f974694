//! Streaming a NodeList page gives the same summaries as decoding it whole.

use crate::analysis::node::{NodeSummary, NodeView, summarize};
use crate::analysis::wanted::Relevance;
use crate::analysis::wanted::tests::wanted;
use crate::decode::stream::decode_list;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The non-streaming path: every item decoded into a `Vec` first, as `kube`'s
/// `Api::list` does, then summarized.
fn summaries_whole(body: &str, relevance: &Relevance) -> Option<Vec<Result<NodeSummary, ()>>> {
    #[derive(Deserialize)]
    struct Page {
        items: Vec<Value>,
    }
    let page: Page = serde_json::from_str(body).ok()?;
    Some(
        page.items
            .into_iter()
            .map(|v| {
                let view: NodeView = serde_json::from_value(v).map_err(|_| ())?;
                summarize(&view, relevance).map_err(|_| ())
            })
            .collect(),
    )
}

fn summaries_streamed(body: &str, relevance: &Relevance) -> Option<Vec<Result<NodeSummary, ()>>> {
    let mut out = Vec::new();
    decode_list(body.as_bytes(), |item| {
        out.push(
            item.map_err(|_| ())
                .and_then(|v| summarize(&v, relevance).map_err(|_| ())),
        )
    })
    .ok()?;
    Some(out)
}

/// Values that are sometimes right and sometimes of the wrong type.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9./:@-]{0,12}".prop_map(Value::from),
        Just(json!({"x": [1, {"y": null}]})),
    ]
}

fn image_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop_oneof![
            Just("docker.io/library/busybox:1.36"),
            Just("ghcr.io/lsst-sqre/sciplat-lab:w_2024_01"),
            Just("ghcr.io/lsst-sqre/sciplat-lab@sha256:1111111111111111111111111111111111111111111111111111111111111111"),
            Just("registry.k8s.io/pause:3.9"),
            Just("<none>@<none>"),
            Just("Bad Name"),
        ].prop_map(Value::from),
        1 => scalar(),
    ]
}

fn image() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (prop::collection::vec(image_name(), 0..4), prop_oneof![
            3 => (0i64..1 << 40).prop_map(Value::from),
            1 => scalar(),
        ])
            .prop_map(|(names, size)| json!({"names": names, "sizeBytes": size})),
        1 => scalar(),
    ]
}

fn node() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        5 => "[a-z][a-z0-9-]{0,8}".prop_map(Value::from),
        1 => scalar(),
    ];
    let labels = prop_oneof![
        3 => prop::collection::btree_map("[a-z/.]{1,8}", "[a-z0-9]{0,6}", 0..4)
            .prop_map(|m| json!(m)),
        1 => scalar(),
    ];
    let images = prop_oneof![
        4 => prop::collection::vec(image(), 0..6).prop_map(Value::from),
        1 => scalar(),
    ];
    let storage = prop_oneof![
        Just(json!("100Gi")),
        Just(json!("12 parsecs")),
        Just(json!(95551679124u64)),
        scalar(),
    ];
    (
        name,
        labels,
        images,
        storage,
        scalar(),
        any::<bool>(),
        scalar(),
    )
        .prop_map(
            |(name, labels, images, storage, unschedulable, with_status, junk)| {
                let mut n = json!({
                    "metadata": {"name": name, "labels": labels, "annotations": {"a": "b"}},
                    "spec": {"unschedulable": unschedulable,
                             "taints": [{"key": "k", "effect": "NoSchedule"}]},
                    "extra": junk,
                });
                if with_status {
                    n["status"] = json!({
                        "capacity": {"ephemeral-storage": storage},
                        "allocatable": {"ephemeral-storage": "90Gi"},
                        "images": images,
                    });
                }
                n
            },
        )
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![8 => node(), 1 => scalar()]
}

proptest! {
    #[test]
    fn streaming_matches_decoding_the_whole_page(
        items in prop::collection::vec(item(), 0..8),
        token in prop::option::of("[a-z0-9]{0,5}"),
    ) {
        let relevance = Relevance::new(
            &wanted(&["busybox:1.36"], &[r"sciplat-lab:w_"], &[]),
            [],
        );
        let body = json!({
            "kind": "NodeList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "9", "continue": token},
            "items": items,
        })
        .to_string();
        let whole = summaries_whole(&body, &relevance).expect("a well-formed page");
        let streamed = summaries_streamed(&body, &relevance).expect("a well-formed page");
        prop_assert_eq!(&streamed, &whole);
        // Image entries summarized while they are decoded: the same summaries,
        // problems included.
        let folded = crate::analysis::node::decoding_for(
            std::sync::Arc::new(relevance.clone()),
            || summaries_streamed(&body, &relevance),
        )
        .expect("a well-formed page");
        prop_assert_eq!(folded, whole);
    }

}
