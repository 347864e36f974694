#!/usr/bin/env bash
# Prints the analysis once, then serves /metrics on :9754 (override with LISTEN=).
# Uses the cluster when one is configured, else the shipped example data.
set -euo pipefail
cd "$(dirname "$0")/.."
listen="${LISTEN:-127.0.0.1:9754}"
cargo build --release --quiet
bin=target/release/imagecap-exporter
if [ -n "${KUBERNETES_SERVICE_HOST:-}" ] || [ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ]; then
  echo "run: using the cluster from your kubeconfig"
  args=(--config "${CONFIG:-examples/config.yaml}")
else
  echo "run: no cluster configured; using examples/nodes.json"
  # With Nublado's answer for these nodes: the spawner menu, and what it leaves out;
  # and saved node-agent answers of two example nodes: the report, the status page
  # and /metrics tell hidden from absent.
  args=(--config examples/config.yaml --nodes-file examples/nodes.json
        --nublado-file examples/nublado-prepulls.json
        --agents-file examples/agents.json)
fi
"$bin" check "${args[@]}" || true
echo "run: serving http://$listen/metrics (Ctrl-C to stop)"
exec "$bin" serve --web.listen-address "$listen" "${args[@]}"
