"""Processes the end-to-end tests run for real, all bound to 127.0.0.1.

Every start_* function returns a handle whose .stop() ends the process; the pytest
fixtures in conftest.py stop them and remove their temporary directories.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(os.environ.get("IMAGECAP_BIN", ROOT / "target" / "debug" / "imagecap-exporter"))
# Upper bound for any single wait in these tests.
DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, fn, timeout: float = DEADLINE_S, interval: float = 0.2):
    """Calls fn until it returns a truthy value; raises after `timeout` seconds."""
    end = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


class Proc:
    def __init__(self, name: str, argv: list[str], workdir: Path, cwd: Path | None = None):
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=cwd or workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _started(self, wait):
        """Runs a start-up wait; a process that fails it is stopped before the error propagates."""
        try:
            return wait()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _logged_addr(self, message: str):
        """The `addr` field of the JSON log line with `message`, once logged; raises
        when the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.log()}")
        for line in self.log().splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("addr") and fields.get("message") == message:
                return fields["addr"]
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class Exporter(Proc):
    """imagecap-exporter serve, listening on an ephemeral loopback port."""

    def __init__(self, workdir: Path, args: list[str], scheme: str = "http", verify=True, auth=None):
        """`verify` (a CA file) and `auth` ((user, password)) are used for this
        harness's own requests when the exporter serves TLS or basic auth."""
        argv = [str(BIN), "--log-format", "json", "serve", "--listen", "127.0.0.1:0", *args]
        super().__init__("exporter", argv, workdir, cwd=ROOT)
        self.addr = self._started(lambda: wait_for("the exporter to log its listen address", self._addr, timeout=30))
        self.url = f"{scheme}://{self.addr}"
        self.verify = verify
        self.auth = auth

    def _addr(self):
        return self._logged_addr("listening")

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("verify", self.verify)
        kw.setdefault("auth", self.auth)
        kw.setdefault("timeout", 10)
        return requests.get(self.url + path, **kw)

    def metrics(self) -> str:
        r = self.get("/metrics")
        r.raise_for_status()
        return r.text

    def wait_ready(self):
        wait_for("exporter /readyz", lambda: self.get("/readyz", timeout=5).ok)


def start_exporter(workdir: Path, nodes: Path = EXAMPLES / "nodes.json",
                   config: Path = EXAMPLES / "config.yaml", extra: list[str] | None = None,
                   **client) -> Exporter:
    ex = Exporter(workdir, ["--nodes-file", str(nodes), "--config", str(config), *(extra or [])], **client)
    ex._started(ex.wait_ready)
    return ex


class Prometheus(Proc):
    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path] = (),
                 alertmanager: str | None = None, interval: str = "1s", job: str = "imagecap-exporter",
                 scrape_extra: dict | None = None):
        """`scrape_extra` is merged into the scrape config (scheme, tls_config, basic_auth...)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules_dir = workdir / "rules"
        rules_dir.mkdir(exist_ok=True)
        copied = []
        for i, rf in enumerate(rule_files):
            dst = rules_dir / f"{i}-{Path(rf).name}"
            shutil.copy(rf, dst)
            copied.append(str(dst))
        cfg = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "scrape_timeout": interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}], **(scrape_extra or {})}],
            "rule_files": copied,
        }
        if alertmanager:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        cfg_path = workdir / "prometheus.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        argv = ["prometheus", f"--config.file={cfg_path}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={workdir / 'tsdb'}", "--web.enable-lifecycle",
                "--log.level=warn"]
        super().__init__("prometheus", argv, workdir)
        self._started(lambda: wait_for("prometheus /-/ready", self._ready))

    def _ready(self):
        if not self.alive():
            raise RuntimeError(f"prometheus exited:\n{self.log()}")
        return requests.get(self.url + "/-/ready", timeout=5).ok

    def query(self, expr: str, time_: float | None = None) -> dict:
        params = {"query": expr}
        if time_ is not None:
            params["time"] = time_
        r = requests.get(self.url + "/api/v1/query", params=params, timeout=10)
        return r.json()

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> dict:
        r = requests.get(self.url + "/api/v1/query_range",
                         params={"query": expr, "start": start, "end": end, "step": step}, timeout=10)
        return r.json()

    def wait_scraped(self, job: str = "imagecap-exporter"):
        def up():
            res = self.query(f'up{{job="{job}"}} == 1')
            return res.get("status") == "success" and res["data"]["result"]
        wait_for(f"prometheus to scrape {job}", up)


class Alertmanager(Proc):
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.cluster_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {
            "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "null"}],
        }
        cfg_path = workdir / "alertmanager.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        argv = ["prometheus-alertmanager", f"--config.file={cfg_path}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--cluster.listen-address=127.0.0.1:{self.cluster_port}",
                "--log.level=warn"]
        super().__init__("alertmanager", argv, workdir)
        self._started(lambda: wait_for("alertmanager /-/ready", self._ready))

    def _ready(self):
        if not self.alive():
            raise RuntimeError(f"alertmanager exited:\n{self.log()}")
        return requests.get(self.url + "/-/ready", timeout=5).ok

    def alerts(self) -> list[dict]:
        r = requests.get(self.url + "/api/v2/alerts", timeout=10)
        r.raise_for_status()
        return r.json()


def new_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"imagecap-{prefix}-"))


class Agent(Proc):
    """imagecap-exporter agent (the node agent), listening on an ephemeral loopback port."""

    def __init__(self, workdir: Path, node: str, cri_endpoint: str, args: list[str] | None = None):
        argv = [str(BIN), "--log-format", "json", "agent", "--node-name", node,
                "--cri-endpoint", cri_endpoint, "--listen", "127.0.0.1:0", *(args or [])]
        super().__init__(f"agent-{node}", argv, workdir, cwd=ROOT)
        self.node = node
        self.addr = self._started(lambda: wait_for("the agent to log its listen address", self._addr, timeout=30))
        self.url = f"http://{self.addr}"

    def _addr(self):
        return self._logged_addr("node agent listening")

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(self.url + path, **kw)

    def metrics(self) -> str:
        r = self.get("/metrics")
        r.raise_for_status()
        return r.text


def start_agent(workdir: Path, node: str, cri_endpoint: str, interval: str = "1s",
                extra: list[str] | None = None) -> Agent:
    """Starts the agent reading `cri_endpoint` every `interval` (not waiting for readiness)."""
    return Agent(workdir, node, cri_endpoint, ["--interval", interval, *(extra or [])])


def hold_fake_apiserver(workdir: Path, hold_args: list[str]) -> tuple[Proc, Path]:
    """The fake API server (tests/support/fake_apiserver.rs), held by the scale
    benchmark binary with `--hold-fake DIR` and `hold_args`; returns the process and
    the kubeconfig it wrote. The benchmark binary runs itself, not under `cargo
    bench`, so that stopping it stops the server (cargo would leave its child
    behind). The first call may build it (dev profile)."""
    built = subprocess.run(["cargo", "bench", "--profile", "dev", "--bench", "scale", "--no-run",
                            "--message-format", "json"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    exe = next(m["executable"] for m in map(json.loads, built.stdout.splitlines())
               if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "scale")
    hold = workdir / "fake"
    proc = Proc("fake-apiserver", [exe, "--hold-fake", str(hold), *hold_args], workdir, cwd=ROOT)

    def serving():
        if not proc.alive():
            raise RuntimeError(f"the fake API server exited:\n{proc.log()}")
        return (hold / "kubeconfig").exists() and "serving" in proc.log()

    proc._started(lambda: wait_for("the fake API server", serving, timeout=60))
    return proc, hold / "kubeconfig"
