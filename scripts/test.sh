#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit/property/integration tests,
# Prometheus rule checks and rule unit tests, and the end-to-end tests against real
# Prometheus, Alertmanager, Helm and Chromium. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test"
cargo build --quiet
cargo test --quiet 2>&1 | tee target/cargo-test.log

if [ -d alerts ]; then
  step "promtool check rules / test rules"
  promtool check rules alerts/*.rules.yaml
  if compgen -G "alerts/tests/*.yaml" >/dev/null; then
    promtool test rules alerts/tests/*.yaml
  fi
fi

step "end-to-end tests (pytest)"
IMAGECAP_BIN="$PWD/target/debug/imagecap-exporter" .venv/bin/python -m pytest -q tests/e2e
