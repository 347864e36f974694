//! A bad configuration stops `serve` and `check` at once with exit status 2 and a
//! message that names the key.

use std::process::Command;

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown key", "prepull:\n  imagez: []\n", "imagez"),
        (
            "bad regex",
            "prepull:\n  patterns: ['^ghcr\\.io/(x']\n",
            "prepull.patterns[0]",
        ),
        (
            "bad reference",
            "prepull:\n  images: [ok:1, 'UPPER/Case:x y']\n",
            "prepull.images[1]",
        ),
        (
            "bad selector",
            "prepull:\n  nodeSelector:\n    'no spaces allowed': x\n",
            "prepull.nodeSelector",
        ),
        ("bad cap", "defaultMaxImages: -5\n", "defaultMaxImages"),
        ("not yaml", "prepull: [unclosed\n", "prepull"),
    ];
    for (what, text, key) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        for cmd in ["serve", "check"] {
            let out = Command::new(env!("CARGO_BIN_EXE_imagecap-exporter"))
                .args([
                    cmd,
                    "--config",
                    path.to_str().unwrap(),
                    "--nodes-file",
                    "/dev/null",
                ])
                .args(if cmd == "serve" {
                    &["--listen", "127.0.0.1:0"][..]
                } else {
                    &[][..]
                })
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} ({cmd}): {err}");
            assert!(err.contains(key), "{what} ({cmd}) should name {key}: {err}");
            assert!(
                err.contains("config.yaml"),
                "{what} ({cmd}) should name the file: {err}"
            );
        }
    }
}

/// A config or web config file above its size limit is refused before it is read
/// (a sparse file: nothing to read but its size), with exit 2 naming the file and
/// the limit.
#[test]
fn oversized_files_exit_2_unread() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::File::create(&config)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let web = dir.path().join("web.yml");
    std::fs::File::create(&web)
        .unwrap()
        .set_len((1 << 20) + 1)
        .unwrap();
    let (config, web) = (config.to_str().unwrap(), web.to_str().unwrap());
    let listen = ["--listen", "127.0.0.1:0"];
    let cases: [(&[&str], &str, &str); 4] = [
        (&["check", "--config", config], "config.yaml", "16 MiB"),
        (&["serve", "--config", config], "config.yaml", "16 MiB"),
        (&["serve", "--web.config.file", web], "web.yml", "1 MiB"),
        (
            &["agent", "--node-name", "n", "--web.config.file", web],
            "web.yml",
            "1 MiB",
        ),
    ];
    for (args, file, limit) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagecap-exporter"));
        cmd.args(args);
        if args[0] != "agent" {
            cmd.args(["--nodes-file", "/dev/null"]);
        }
        if args[0] != "check" {
            cmd.args(listen);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(file) && err.contains(&format!("above the limit of {limit}")),
            "{args:?}: {err}"
        );
    }
}
