#!/usr/bin/env bash
# Generates the Prometheus rules and the Grafana dashboard from the mixin.
#
#   mixin/generate.sh [--mixin FILE] [--out DIR]
#
# FILE (default mixin/mixin.libsonnet) is the mixin to render: a file that imports
# 'mixin.libsonnet' and overrides its _config renders a customized copy (the mixin
# directory is on the import path). DIR (default: the repository root) receives
# alerts/imagecap.rules.yaml and dashboards/imagecap.json. Output is deterministic:
# jsonnet sorts object keys, and the dashboard is re-indented by Python's json, which
# writes numbers in their shortest form.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mixin="$here/mixin.libsonnet"
out="$(dirname "$here")"
while [ $# -gt 0 ]; do
  case "$1" in
    --mixin) mixin="$(realpath "$2")"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "generate.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v jsonnet >/dev/null 2>&1 || { echo "generate.sh: jsonnet is missing (apt-get install jsonnet)" >&2; exit 1; }
mkdir -p "$out/alerts" "$out/dashboards"

rules="$(mktemp)"
dashboard="$(mktemp)"
trap 'rm -f "$rules" "$dashboard"' EXIT

{
  echo "# Generated from mixin/ (alerts/alerts.libsonnet) by mixin/generate.sh: do not edit."
  echo "# Why the rules are written as they are: mixin/alerts/alerts.libsonnet, docs/runbook.md."
  jsonnet -J "$here" -S --tla-code-file "m=$mixin" -e '
    function(m) std.manifestYamlDoc(m.prometheusAlerts, indent_array_in_object=true, quote_keys=false)'
} >"$rules"

jsonnet -J "$here" --tla-code-file "m=$mixin" -e 'function(m) m.grafanaDashboards["imagecap.json"]' |
  python3 -c 'import json, sys; json.dump(json.load(sys.stdin), sys.stdout, indent=2, ensure_ascii=False); print()' \
    >"$dashboard"

# Replace the outputs only once both rendered.
cp "$rules" "$out/alerts/imagecap.rules.yaml"
cp "$dashboard" "$out/dashboards/imagecap.json"
