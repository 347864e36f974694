//! Conditional reads of `/v1/images`: the entity tag of a report and the
//! `If-None-Match` test. Pure functions, no I/O.
//!
//! The exporter reads every agent each interval, and a node's image list rarely
//! changes between two reads: with the tag, an unchanged list costs a `304 Not
//! Modified` (headers, no body) instead of the whole list.
//!
//! The tag covers everything the report says except two readings that move on
//! their own: `collectedAt`, which changes with every reading of the runtime (a
//! tag over it would never match), and `imageFsUsedBytes`, which the runtime
//! recomputes every few seconds from all its snapshots, the containers' writable
//! layers included (on a busy node it would change the tag nearly every read).
//! Both still matter: the exporter refuses a list its runtime has not confirmed
//! for too long, and reports the filesystem use. So the agent sends both in
//! headers ([`COLLECTED_AT`], [`IMAGE_FS_USED`]) with every answer, 200 and 304
//! alike, and on a 304 the exporter takes them from there.

pub use crate::analysis::runtime::COLLECTED_AT_HEADER as COLLECTED_AT;
pub use crate::analysis::runtime::IMAGE_FS_USED_HEADER as IMAGE_FS_USED;
use crate::analysis::runtime::{AgentReport, RuntimeImage};

/// The strong entity tag (quoted) of `report`: the SHA-256 (first 128 bits, hex)
/// of its JSON without `collectedAt` and `imageFsUsedBytes`, the images and
/// each image's names in sorted order. Two reports differing in anything else
/// (node, an image's id, names or size, an image more or less, the pruning
/// plan, and any field added later) get different tags; the order does not
/// count, since containerd lists its images in a different order on every call
/// and nothing the exporter makes of a list depends on it.
/// The same gzip-encoded or not: the exporter compares the content it decodes,
/// whichever encoding carried it.
pub fn entity_tag(report: &AgentReport) -> Result<String, serde_json::Error> {
    let mut unstamped = AgentReport {
        collected_at: String::new(),
        image_fs_used_bytes: None,
        ..report.clone()
    };
    for image in &mut unstamped.images {
        image.repo_tags.sort_unstable();
        image.repo_digests.sort_unstable();
    }
    unstamped.images.sort_unstable_by(order);
    let mut digest = Digest(ring::digest::Context::new(&ring::digest::SHA256));
    serde_json::to_writer(&mut digest, &unstamped)?;
    let sum = digest.0.finish();
    let hex: String = sum.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("\"{hex}\""))
}

/// Images by id, then names and size.
fn order(a: &RuntimeImage, b: &RuntimeImage) -> std::cmp::Ordering {
    (&a.id, &a.repo_tags, &a.repo_digests, a.size).cmp(&(
        &b.id,
        &b.repo_tags,
        &b.repo_digests,
        b.size,
    ))
}

/// A SHA-256 fed as a writer, so that the JSON is hashed as it is written.
struct Digest(ring::digest::Context);

impl std::io::Write for Digest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `If-None-Match` header values name `tag` (or are `*`): then the
/// answer is `304`. The comparison is the weak one RFC 9110 prescribes for
/// `If-None-Match` (`W/"x"` matches `"x"`). A malformed value matches nothing
/// from where it goes wrong, so the client gets the whole answer.
pub fn none_match<'a>(values: impl IntoIterator<Item = &'a [u8]>, tag: &str) -> bool {
    let opaque = tag.as_bytes();
    values.into_iter().any(|value| list_names(value, opaque))
}

/// One `If-None-Match` value: `*`, or entity tags separated by commas.
fn list_names(mut rest: &[u8], opaque: &[u8]) -> bool {
    loop {
        rest = rest.trim_ascii_start();
        while let [b',', tail @ ..] = rest {
            rest = tail.trim_ascii_start();
        }
        match rest {
            [] => return false,
            [b'*', ..] => return rest[1..].trim_ascii().is_empty(),
            _ => {}
        }
        let strong = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(quoted) = strong.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = quoted.iter().position(|&b| b == b'"') else {
            return false;
        };
        // `opaque` is quoted: compare with the quotes.
        if &strong[..end + 2] == opaque {
            return true;
        }
        rest = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn report(collected_at: &str) -> AgentReport {
        AgentReport {
            node: "worker-1".into(),
            collected_at: collected_at.into(),
            images: vec![
                RuntimeImage {
                    id: "sha256:aaa".into(),
                    repo_tags: vec!["docker.io/library/nginx:1.25".into()],
                    repo_digests: vec!["docker.io/library/nginx@sha256:bbb".into()],
                    size: 187_000_000,
                },
                RuntimeImage {
                    id: "sha256:ccc".into(),
                    repo_tags: vec![],
                    repo_digests: vec![],
                    size: 5,
                },
            ],
            image_fs_used_bytes: Some(4096),
            prune: None,
        }
    }

    fn empty_plan() -> crate::analysis::plan::Plan {
        crate::analysis::plan::Plan {
            held: 0,
            target: None,
            remove: 0,
            remove_bytes: 0,
            deferred: 0,
            short_by: 0,
            blocked: None,
            images: vec![],
        }
    }

    #[test]
    fn the_tag_ignores_the_reading_time_fs_use_and_order_and_nothing_else() {
        let base = report("2026-11-25T10:00:00Z");
        let tag = entity_tag(&base).unwrap();
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
            "{tag}"
        );
        assert_eq!(entity_tag(&report("2026-11-25T10:01:00Z")).unwrap(), tag);
        assert_eq!(entity_tag(&base.clone()).unwrap(), tag);
        for fs in [None, Some(0), Some(4097)] {
            let other = AgentReport {
                image_fs_used_bytes: fs,
                ..base.clone()
            };
            assert_eq!(entity_tag(&other).unwrap(), tag, "{fs:?}");
        }
        // The runtime's order, of the images or of an image's names.
        let mut reordered = base.clone();
        reordered.images.reverse();
        assert_eq!(entity_tag(&reordered).unwrap(), tag);
        let mut two_names = base.clone();
        two_names.images[0]
            .repo_tags
            .push("docker.io/library/nginx:1".into());
        let mut other_order = two_names.clone();
        other_order.images[0].repo_tags.reverse();
        assert_eq!(
            entity_tag(&two_names).unwrap(),
            entity_tag(&other_order).unwrap()
        );
        assert_ne!(entity_tag(&two_names).unwrap(), tag);

        type Change = Box<dyn Fn(&mut AgentReport)>;
        let changes: Vec<(&str, Change)> = vec![
            ("node", Box::new(|r| r.node = "worker-2".into())),
            ("id", Box::new(|r| r.images[0].id = "sha256:aab".into())),
            ("tag", Box::new(|r| r.images[0].repo_tags[0].push('x'))),
            (
                "tag added",
                Box::new(|r| r.images[1].repo_tags.push("a:1".into())),
            ),
            ("digest", Box::new(|r| r.images[0].repo_digests.clear())),
            ("size", Box::new(|r| r.images[1].size += 1)),
            ("image gone", Box::new(|r| drop(r.images.pop()))),
            ("plan", Box::new(|r| r.prune = Some(empty_plan()))),
        ];
        for (what, change) in changes {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(entity_tag(&changed).unwrap(), tag, "{what}");
        }
    }

    #[test]
    fn if_none_match_lists() {
        let tag = "\"abc\"";
        let m = |values: &[&str]| none_match(values.iter().map(|v| v.as_bytes()), tag);
        assert!(m(&["\"abc\""]));
        assert!(m(&["W/\"abc\""]));
        assert!(m(&["\"x\", \"abc\""]));
        assert!(m(&["\"x\",W/\"abc\" , \"y\""]));
        assert!(m(&["\"x\"", "\"abc\""]));
        assert!(m(&["*"]));
        assert!(m(&[" * "]));
        assert!(m(&["\"a,b\", \"abc\""]));
        assert!(!m(&[]));
        assert!(!m(&[""]));
        assert!(!m(&["\"abd\""]));
        assert!(!m(&["abc"]));
        assert!(!m(&["\"abc"]));
        assert!(!m(&["w/\"abc\""]));
        assert!(!m(&["*, \"abc\"x"]));
        assert!(!m(&["\"abcd\""]));
        assert!(!m(&["\"ab\""]));
        // Malformed from some point on: what came before still counts.
        assert!(m(&["\"abc\", garbage"]));
        assert!(!m(&["garbage, \"abc\""]));
    }

    fn opaque() -> impl Strategy<Value = String> {
        "[!#-~]{0,12}".prop_map(|s| format!("\"{s}\""))
    }

    proptest! {
        #[test]
        fn any_header_is_safe(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = none_match([value.as_slice()], "\"abc\"");
        }

        #[test]
        fn a_list_naming_the_tag_matches(
            before in proptest::collection::vec((any::<bool>(), opaque()), 0..5),
            after in proptest::collection::vec((any::<bool>(), opaque()), 0..5),
            weak in any::<bool>(),
            tag in opaque(),
        ) {
            let show = |(w, t): &(bool, String)| format!("{}{t}", if *w { "W/" } else { "" });
            let others: Vec<String> = before.iter().chain(&after).map(show).collect();
            let mut all: Vec<String> = before.iter().map(show).collect();
            all.push(show(&(weak, tag.clone())));
            all.extend(after.iter().map(show));
            let header = all.join(", ");
            prop_assert!(none_match([header.as_bytes()], &tag));
            let without = others.join(" ,");
            let named = before.iter().chain(&after).any(|(_, t)| *t == tag);
            prop_assert_eq!(none_match([without.as_bytes()], &tag), named);
        }
    }
}
