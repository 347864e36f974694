#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian packages (Prometheus,
# promtool, Alertmanager, Chromium, jsonnet, containerd, podman, curl, gcc) through apt-get, and
# Python tools into ./.venv.
# Safe to run again: it only installs what is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v jsonnet >/dev/null 2>&1 || need_apt+=(jsonnet)
# The node agent's tests run a real containerd (and its ctr client).
{ command -v containerd && command -v ctr; } >/dev/null 2>&1 || need_apt+=(containerd)
# The container image test: podman builds and runs it; runc, because crun refuses
# hybrid cgroup hierarchies.
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
# The CRI tests' sandbox ("pause") binary: compiled with `cc -static`, which needs
# gcc and the static C library (libc.a, in libc6-dev).
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The compiler prints the bare name when it finds no such file.
[ -e "$(cc -print-file-name=libc.a 2>/dev/null)" ] || need_apt+=(libc6-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The peers the scale benchmark compares `check` with (benches/peers/).
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2046
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need_apt[@]}" | sort -u)
  # Debian's packages start their own services where an init system runs; the
  # tests start their own instances on loopback, so stop the packaged ones. Only
  # right after installing: a later run must not kill anybody's Prometheus.
  for svc in prometheus prometheus-alertmanager; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

if [ ! -x .venv/bin/python ] || ! cmp -s requirements-dev.txt .venv/.requirements 2>/dev/null; then
  echo "setup: creating .venv from requirements-dev.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt .venv/.requirements
fi
