"""--web.config.file: TLS, client certificates and basic auth, as node_exporter's
exporter-toolkit files configure them; proven with requests and a real Prometheus."""
from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from harness import BIN, EXAMPLES, ROOT, Exporter, Prometheus, start_exporter, wait_for

PASSWORD = "s3cret-scrape"


def openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(d: Path, name: str):
    """A key and a certificate signed by the test CA in `d`."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture
def pki(workdir: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = workdir / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=imagecap test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        issue(d, name)
    return d


def served_certificate(addr: str) -> bytes:
    host, port = addr.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=5)
    return ssl.PEM_cert_to_DER_cert(pem)


def test_rotated_certificates_are_picked_up(workdir, procs, pki):
    ca = str(pki / "ca.crt")
    ex = start_exporter(workdir, extra=["--web.config.file", str(web_config(pki))],
                        scheme="https", verify=ca, auth=("prometheus", PASSWORD))
    procs.append(ex)
    first = served_certificate(ex.addr)
    assert first == ssl.PEM_cert_to_DER_cert((pki / "server.crt").read_text())

    issue(pki, "server")  # as cert-manager does: new key and certificate in place
    rotated = ssl.PEM_cert_to_DER_cert((pki / "server.crt").read_text())
    assert rotated != first
    wait_for("the new certificate to be served", lambda: served_certificate(ex.addr) == rotated, timeout=40)
    assert ex.get("/metrics").status_code == 200

    # A broken rotation keeps the last good certificate.
    (pki / "server.crt").write_text("not a certificate\n")
    wait_for("the broken rotation to be noticed", lambda: "cannot be loaded" in ex.log(), timeout=40)
    assert served_certificate(ex.addr) == rotated


def web_config(pki: Path, **tls) -> Path:
    cfg = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **tls},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()},
    }
    path = pki / "web.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tls_and_basic_auth(workdir, procs, pki):
    ca = str(pki / "ca.crt")
    ex = start_exporter(workdir, extra=["--web.config.file", str(web_config(pki))],
                        scheme="https", verify=ca, auth=("prometheus", PASSWORD))
    procs.append(ex)

    # Plain HTTP on the TLS port gets no metrics.
    plain = ex.url.replace("https://", "http://")
    try:
        r = requests.get(plain + "/metrics", timeout=5)
        assert r.status_code >= 400 and "imagecap_nodes" not in r.text
    except requests.exceptions.ConnectionError:
        pass
    # An unknown CA is refused by the client: the server really presents our cert.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(ex.url + "/healthz", timeout=5)

    assert ex.get("/metrics", auth=None).status_code == 401
    wrong = ex.get("/metrics", auth=("prometheus", "nope"))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic ")
    assert ex.get("/metrics", auth=("someone", PASSWORD)).status_code == 401
    assert ex.get("/", auth=None).status_code == 401, "the status page is protected too"
    ok = ex.get("/metrics")
    assert ok.status_code == 200 and "imagecap_nodes 6" in ok.text
    # Probes need no credentials: the kubelet has none.
    assert ex.get("/healthz", auth=None).status_code == 200
    assert ex.get("/readyz", auth=None).status_code == 200

    # A real Prometheus scrapes it over TLS with basic auth; one with a wrong
    # password cannot.
    def prometheus(name: str, password: str) -> Prometheus:
        d = workdir / name
        d.mkdir()
        p = Prometheus(d, [ex.addr], scrape_extra={
            "scheme": "https", "tls_config": {"ca_file": ca},
            "basic_auth": {"username": "prometheus", "password": password}})
        procs.append(p)
        return p

    good = prometheus("good", PASSWORD)
    bad = prometheus("bad", "nope")
    good.wait_scraped()
    res = good.query("imagecap_nodes")
    assert res["data"]["result"][0]["value"][1] == "5"

    def bad_scrape_failed():
        targets = requests.get(bad.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return targets and targets[0]["health"] == "down" and "401" in targets[0]["lastError"]
    wait_for("the wrong password to fail the scrape", bad_scrape_failed)


def test_client_certificates(workdir, procs, pki):
    ca = str(pki / "ca.crt")
    client = (str(pki / "client.crt"), str(pki / "client.key"))
    cfg = web_config(pki, client_ca_file="ca.crt", client_auth_type="RequireAndVerifyClientCert")
    # Not start_exporter: its readiness wait has no client certificate.
    ex = Exporter(workdir, ["--nodes-file", str(EXAMPLES / "nodes.json"), "--config",
                            str(EXAMPLES / "config.yaml"), "--web.config.file", str(cfg)],
                  scheme="https", verify=ca, auth=("prometheus", PASSWORD))
    procs.append(ex)
    wait_for("exporter ready over mTLS", lambda: ex.get("/readyz", cert=client).ok)

    with pytest.raises(requests.exceptions.ConnectionError):
        ex.get("/metrics")  # no client certificate: the handshake fails
    r = ex.get("/metrics", cert=client)
    assert r.status_code == 200 and "imagecap_node_images" in r.text

    prom_dir = workdir / "prom"
    prom_dir.mkdir()
    prom = Prometheus(prom_dir, [ex.addr], scrape_extra={
        "scheme": "https",
        "tls_config": {"ca_file": ca, "cert_file": client[0], "key_file": client[1]},
        "basic_auth": {"username": "prometheus", "password": PASSWORD}})
    procs.append(prom)
    prom.wait_scraped()
    assert prom.query("imagecap_node_at_cap == 1")["data"]["result"][0]["metric"]["node"] == "nublado-worker-1"


def test_bad_web_config_exits_2(workdir, pki):
    bad = pki / "bad.yml"
    for text, needle in [
        ("tls_server_config:\n  cert_file: server.crt\n", "key_file"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "missing.crt"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "basic_auth_users.prometheus"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [x]\n",
         "cipher_suites"),
    ]:
        bad.write_text(text)
        out = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0", "--nodes-file",
                              "examples/nodes.json", "--web.config.file", str(bad)],
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr, out.stderr
