//! The kubelet's own configuration, as `/api/v1/nodes/{name}/proxy/configz` returns it.

use serde::Deserialize;

#[derive(Deserialize)]
struct Configz {
    kubeletconfig: Option<KubeletConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfig {
    node_status_max_images: Option<serde_json::Value>,
}

/// `nodeStatusMaxImages` from a configz answer: -1 (no cap), 0 or a positive cap.
pub fn parse_configz(body: &[u8]) -> Result<i64, String> {
    let c: Configz = serde_json::from_slice(body)
        .map_err(|e| format!("configz is not the expected JSON: {e}"))?;
    let kc = c
        .kubeletconfig
        .ok_or("configz has no kubeletconfig object")?;
    match kc.node_status_max_images {
        None | Some(serde_json::Value::Null) => {
            Err("kubeletconfig has no nodeStatusMaxImages".into())
        }
        Some(v) => match v.as_i64() {
            Some(n) if n >= -1 => Ok(n),
            Some(n) => Err(format!("nodeStatusMaxImages {n} is below -1")),
            None => Err(format!("nodeStatusMaxImages {v} is not an integer")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_cap() {
        let body =
            br#"{"kubeletconfig":{"enableServer":true,"nodeStatusMaxImages":50,"podsPerCore":0}}"#;
        assert_eq!(parse_configz(body), Ok(50));
        assert_eq!(
            parse_configz(br#"{"kubeletconfig":{"nodeStatusMaxImages":-1}}"#),
            Ok(-1)
        );
        assert_eq!(
            parse_configz(br#"{"kubeletconfig":{"nodeStatusMaxImages":0}}"#),
            Ok(0)
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        for (body, needle) in [
            (&br#"{"kubeletconfig":{}}"#[..], "no nodeStatusMaxImages"),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":null}}"#,
                "no nodeStatusMaxImages",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":"50"}}"#,
                "not an integer",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":-7}}"#,
                "below -1",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":1.5}}"#,
                "not an integer",
            ),
            (br#"{}"#, "no kubeletconfig"),
            (b"<html>404</html>", "not the expected JSON"),
        ] {
            let e = parse_configz(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_configz(&body);
        }
    }
}
