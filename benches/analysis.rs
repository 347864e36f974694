//! Criterion micro-benchmarks of the pure analysis and of /metrics rendering, on
//! nodes from the scale benchmark's generator (benches/support/gen.rs, 5,000 nodes x
//! 100 images, the config with 20 wanted images).
//!
//!   cargo bench --bench analysis [-- FILTER]

#[path = "support/gen.rs"]
#[allow(dead_code)]
mod nodegen;

use criterion::{Criterion, criterion_group, criterion_main};
use imagecap_exporter::analysis::report::{Assumptions, NodeExtras};
use imagecap_exporter::analysis::{NodeSummary, NodeView, Relevance, analyze, summarize};
use imagecap_exporter::config::Config;
use imagecap_exporter::metrics::Metrics;
use nodegen::Cluster;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

const NODES: usize = 5000;
const IMAGES: usize = 100;

fn benches(c: &mut Criterion) {
    let cluster = Cluster::new(NODES, IMAGES, 42);
    let wanted = Config::parse(&cluster.config_yaml())
        .expect("the generated config is valid")
        .wanted;
    let relevance = Relevance::new(&wanted, []);
    let sources = Default::default();
    let caps = NodeExtras::new();
    let assume = Assumptions {
        default_max_images: 50,
        agents: false,
        configured_at: None,
    };

    // An eligible node under its cap reporting 100 images, with every
    // pattern-matched tag: analyzed alone, it wants exactly 20 images.
    let (index, view, summary) = (0..NODES)
        .filter(|&i| cluster.profile(i).eligible() && cluster.image_count(i) == IMAGES)
        .find_map(|i| {
            let view: NodeView = serde_json::from_value(cluster.node(i, 0)).unwrap();
            let summary = summarize(&view, &relevance).unwrap();
            let report = analyze([&summary], &wanted, &sources, assume, &caps);
            (report.images.len() == Cluster::WANTED).then_some((i, view, summary))
        })
        .expect("a node with all 20 wanted images in view");
    let text = serde_json::to_string(&cluster.node(index, 0)).unwrap();

    let mut g = c.benchmark_group("one node (100 images)");
    g.bench_function("summarize", |b| {
        b.iter(|| summarize(black_box(&view), &relevance).unwrap())
    });
    g.bench_function("decode NodeView + summarize", |b| {
        b.iter(|| {
            let v: NodeView = serde_json::from_str(black_box(&text)).unwrap();
            summarize(&v, &relevance).unwrap()
        })
    });
    // With the thread's name cache, as the exporter summarizes: the whole node
    // decoded first, or (as lists, watch events and files are decoded) its image
    // entries summarized as they are read.
    use imagecap_exporter::analysis::node::{decoding_for, summarize_with, with_name_cache};
    let shared = std::sync::Arc::new(relevance.clone());
    g.bench_function("decode NodeView + summarize, name cache", |b| {
        b.iter(|| {
            let v: NodeView = serde_json::from_str(black_box(&text)).unwrap();
            with_name_cache(&shared, |names| summarize_with(&v, &shared, names)).unwrap()
        })
    });
    g.bench_function(
        "decode NodeView folding entries + summarize, name cache",
        |b| {
            b.iter(|| {
                decoding_for(shared.clone(), || {
                    let v: NodeView = serde_json::from_str(black_box(&text)).unwrap();
                    with_name_cache(&shared, |names| summarize_with(&v, &shared, names)).unwrap()
                })
            })
        },
    );
    g.bench_function("analyze (match 20 wanted images)", |b| {
        b.iter(|| analyze([black_box(&summary)], &wanted, &sources, assume, &caps))
    });
    g.finish();

    let summaries: Vec<NodeSummary> = (0..NODES)
        .map(|i| {
            let v: NodeView = serde_json::from_value(cluster.node(i, 0)).unwrap();
            summarize(&v, &relevance).unwrap()
        })
        .collect();
    let report = std::sync::Arc::new(analyze(&summaries, &wanted, &sources, assume, &caps));
    assert_eq!(report.nodes.len(), NODES);
    assert_eq!(report.images.len(), Cluster::WANTED);
    let metrics = Metrics::new("bench");
    let now = Some(SystemTime::now());

    let mut g = c.benchmark_group("5000 nodes (100 images, 20 wanted)");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("analyze", |b| {
        b.iter(|| analyze(black_box(&summaries), &wanted, &sources, assume, &caps))
    });
    // A scrape between node changes: the report's text is reused.
    g.bench_function("Metrics::render, same report", |b| {
        b.iter(|| metrics.render(black_box(&report), now))
    });
    // A scrape after a change: analysis and a fresh encoding.
    g.bench_function("analyze + render (changed report)", |b| {
        b.iter(|| {
            let r = std::sync::Arc::new(analyze(
                black_box(&summaries),
                &wanted,
                &sources,
                assume,
                &caps,
            ));
            metrics.render(&r, now)
        })
    });
    g.finish();
}

criterion_group!(analysis, benches);
criterion_main!(analysis);
