"""--web.config.file: TLS, client certificates and basic auth, as node_exporter's
exporter-toolkit files configure them; proven with requests and a real Prometheus."""
from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import time
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
    assert res["data"]["result"][0]["value"][1] == "6"

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
        ("basic_auth_users:\n  prometheus: '$2y$03$KhLtLLb4v3aMZ3d4Z7sVnOhSg9q0nDzbsyL3gHr2fJ0Eh7UsLQvLa'\n",
         "basic_auth_users.prometheus: bcrypt cost 3 is outside 4-31"),
        ("basic_auth_users:\n  prometheus: [" + "[" * 100000 + "\n", "nested deeper than 64"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [x]\n",
         "cipher_suites"),
    ]:
        bad.write_text(text)
        out = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0", "--nodes-file",
                              "examples/nodes.json", "--web.config.file", str(bad)],
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr, out.stderr


def closed_within(sock, limit: float) -> float:
    """Seconds until the server closes `sock` (EOF or reset); fails past `limit`."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return time.monotonic() - start
    raise AssertionError(f"still open after {limit} s")


def test_stalled_tls_connections_are_closed(workdir, procs, pki):
    """A client that stalls the TLS handshake, or completes it and then sends a byte
    now and then, is closed at the header timeout; an idle kept-alive connection at
    the idle timeout."""
    ex = start_exporter(workdir, extra=["--web.config.file", str(web_config(pki)),
                                        "--web.header-read-timeout", "2s", "--web.idle-timeout", "3s"],
                        scheme="https", verify=str(pki / "ca.crt"), auth=("prometheus", PASSWORD))
    procs.append(ex)
    host, port = ex.addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))

    # Connected, no handshake.
    raw = socket.create_connection((host, int(port)), timeout=5)
    took = closed_within(raw, 2 + 2)
    raw.close()

    # Handshake done, then one byte every half second.
    tls = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host)
    start = time.monotonic()
    tls.sendall(b"GET /metrics HTTP/1.1\r\n")
    closed = None
    for i in range(20):
        try:
            tls.sendall(b"X")
        except OSError:
            closed = time.monotonic() - start
            break
        tls.settimeout(0.5)
        try:
            if tls.recv(4096) == b"":
                closed = time.monotonic() - start
                break
        except (socket.timeout, TimeoutError):
            pass
        except (ConnectionError, ssl.SSLError, OSError):
            closed = time.monotonic() - start
            break
    tls.close()
    assert closed is not None and closed <= 2 + 2, f"trickling TLS client open for {closed}"

    # A complete request, then nothing: kept alive, then closed at the idle timeout.
    tls = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host)
    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    tls.settimeout(5)
    assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    idle = closed_within(tls, 3 + 2)
    tls.close()
    assert idle >= 2.5, f"closed after {idle} s, before the idle timeout"
    print(f"closed after: silent {took:.2f} s, trickling TLS {closed:.2f} s, idle {idle:.2f} s")


def test_basic_auth_details_and_gzip(workdir, procs, pki):
    ex = start_exporter(workdir, extra=["--web.config.file", str(web_config(pki))],
                        scheme="https", verify=str(pki / "ca.crt"), auth=("prometheus", PASSWORD))
    procs.append(ex)
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    for scheme in ("Basic", "basic", "BASIC"):
        r = ex.get("/metrics", auth=None, headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, scheme
    # gzip when asked, as Prometheus always does (the real Prometheus scrapes in
    # test_tls_and_basic_auth go through it).
    r = ex.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("Content-Encoding") == "gzip" and "imagecap_nodes 6" in r.text
    r = ex.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers
    # curl reads the first gzip member only: the whole exposition is that member.
    curl = subprocess.run(
        ["curl", "-sSf", "--compressed", "--cacert", str(pki / "ca.crt"),
         "-u", f"prometheus:{PASSWORD}", f"https://{ex.addr}/metrics"],
        capture_output=True, timeout=30, check=True).stdout.decode()
    for family in ("process_resident_memory_bytes", "imagecap_node_images{",
                   "imagecap_last_update_timestamp_seconds"):
        assert family in curl, family
    types = lambda text: sorted(l for l in text.splitlines() if l.startswith("# TYPE"))
    assert types(curl) == types(r.text)
    # OpenMetrics refused with q=0: the Prometheus text format.
    r = ex.get("/metrics", headers={"Accept": "application/openmetrics-text;q=0, text/plain"})
    assert r.headers["Content-Type"].startswith("text/plain")

    # An IP address sent as SNI: rustls's warning once a minute, not per connection.
    host, port = ex.addr.rsplit(":", 1)
    for _ in range(3):
        subprocess.run(["openssl", "s_client", "-connect", ex.addr, "-servername", host],
                       input=b"", capture_output=True, timeout=10)
    wait_for("the SNI warning", lambda: "Illegal SNI" in ex.log())
    time.sleep(0.5)
    assert ex.log().count("Illegal SNI") == 1, ex.log()


def test_users_are_reread_when_the_web_config_changes(workdir, procs, pki):
    cfg = web_config(pki)
    ex = start_exporter(workdir, extra=["--web.config.file", str(cfg)],
                        scheme="https", verify=str(pki / "ca.crt"), auth=("prometheus", PASSWORD))
    procs.append(ex)
    assert ex.get("/metrics").status_code == 200

    data = yaml.safe_load(cfg.read_text())
    data["basic_auth_users"] = {"prometheus": bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4)).decode()}
    cfg.write_text(yaml.safe_dump(data))
    wait_for("the new password to work",
             lambda: ex.get("/metrics", auth=("prometheus", "rotated")).status_code == 200, timeout=30)
    assert ex.get("/metrics").status_code == 401, "the old password no longer works"

    # A broken file is logged and the current users kept.
    cfg.write_text("basic_auth_users:\n  prometheus: plaintext\n")
    wait_for("the broken file to be noticed", lambda: "keeping the current users" in ex.log(), timeout=30)
    assert ex.get("/metrics", auth=("prometheus", "rotated")).status_code == 200

    # Never fails open: a file left with no user (emptied, a comment only, the key
    # without a value) keeps the current users, and the log says why.
    refused = "turning basic auth off takes effect only at the next start"
    for n, text in enumerate(["", "# rewritten by hand\n", "basic_auth_users:\n"], 1):
        cfg.write_text(text)
        wait_for(f"the reload of {text!r} to be refused",
                 lambda: ex.log().count(refused) >= n, timeout=30)
        assert ex.get("/metrics", auth=None).status_code == 401, text
        assert ex.get("/", auth=None).status_code == 401, text
        assert ex.get("/metrics", auth=("prometheus", "rotated")).status_code == 200, text
    lines = [l for l in ex.log().splitlines() if refused in l]
    assert len(lines) == 3 and all("ERROR" in l for l in lines), lines
