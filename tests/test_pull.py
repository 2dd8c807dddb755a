"""``mycontainer pull`` and ``run --pull`` against a real registry (tests/registry.py: Debian's
docker-registry, in the session's network namespace), never a mock of one.

Each test pulls into a store of its own (an empty MYCONTAINER_HOME), so what a pull leaves,
or must not leave, is exactly what the test sees.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import registry as fixtures

from conftest import REPO

pytestmark = pytest.mark.privileged
pytest_plugins = ["registry"]

MERGED_VIEW = "ls /data /opaque"
MERGED_EXPECTED = "/data:\nkeep.txt\nnew.txt\n\n/opaque:\nfresh.txt\n"


@pytest.fixture
def store(tmp_path, state_root):
    """``run(*args, env=None)``: mycontainer with an empty store of this test's own; the
    store's path is ``run.home``."""
    home = tmp_path / "store"

    def run(*args: str, env: dict | None = None, timeout: float = 120):
        environment = dict(
            os.environ, MYCONTAINER_HOME=str(home), MYCONTAINER_STATE=str(state_root)
        )
        environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
        environment.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "runtime", *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
        )

    run.home = home
    return run


def contents(home) -> dict[str, list[str]]:
    """What the store holds: its records and its layers, and anything else at its top."""
    listing = {}
    for where in ("images", "layers", ""):
        directory = home / where
        listing[where] = sorted(os.listdir(directory)) if directory.is_dir() else []
    listing[""] = [name for name in listing[""] if name not in ("lock", "images", "layers")]
    return listing


def layout_layers(layout: str) -> list[str]:
    """The digests of the layers of an OCI layout's only image, bottom first."""
    with open(os.path.join(layout, "index.json")) as file:
        manifest = json.load(file)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(layout, "blobs", "sha256", manifest)) as file:
        return [layer["digest"] for layer in json.load(file)["layers"]]


def blob_requests(registry, digest: str) -> int:
    """How many times the registry answered a GET of blob ``digest``."""
    return sum(
        1
        for line in registry.log().splitlines()
        if "response completed" in line and f"/blobs/{digest}" in line and "GET" in line
    )


@pytest.fixture
def layered(registry, test_layouts):
    """The layered image (whiteouts, an opaque directory) pushed as layered:v1."""
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    return registry


def test_pull_prints_the_digest_and_the_image_runs(store, layered):
    pulled = store("pull", f"{layered.host}/layered:v1")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == f"{layered.pushed['layered:v1']}\n"
    name = f"{layered.host}/layered:v1"
    result = store("run", "--rm", "--net", "none", name, "sh", "-c", MERGED_VIEW)
    assert (result.returncode, result.stdout) == (0, MERGED_EXPECTED), result.stderr
    listing = store("images", "--digests").stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    row = listing[1].split()
    assert row[:3] == [f"{layered.host}/layered", "v1", layered.pushed["layered:v1"]]


def test_a_second_pull_fetches_nothing_and_layers_in_the_store_are_skipped(
    store, layered, test_layouts
):
    name = f"{layered.host}/layered:v1"
    assert store("pull", name).returncode == 0
    layers = layout_layers(test_layouts["layered"])
    assert [blob_requests(layered, digest) for digest in layers] == [1, 1, 1]
    again = store("pull", name)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr
    # The same image under another name: its layers are in the store, only its manifest
    # and config are fetched.
    layered.push(f"oci:{test_layouts['layered']}:latest", "copy:v2", fmt="v2s2")
    copy = store("pull", f"{layered.host}/copy:v2")
    assert copy.returncode == 0, copy.stderr
    assert [blob_requests(layered, digest) for digest in layers] == [1, 1, 1]
    assert copy.stderr.count("already exists") == 3


def test_rmi_takes_the_names_images_shows(store, layered):
    name = f"{layered.host}/layered:v1"
    digest = layered.pushed["layered:v1"]
    assert store("pull", name).returncode == 0
    assert store("pull", f"{layered.host}/layered@{digest}").returncode == 0
    rows = [line.split() for line in store("images").stdout.splitlines()[1:]]
    assert sorted(row[:2] for row in rows) == [[f"{layered.host}/layered", "<none>"],
                                                [f"{layered.host}/layered", "v1"]]  # fmt: skip
    image_id = rows[0][2]
    ambiguous = store("rmi", image_id)
    assert ambiguous.returncode == 125 and "remove them by name" in ambiguous.stderr
    by_digest = store("rmi", f"{layered.host}/layered@{digest}")  # that name only, as docker's
    assert by_digest.stdout == f"removed {layered.host}/layered@{digest}\n", by_digest.stderr
    assert len(contents(store.home)["layers"]) == 3  # v1 uses them
    pulled = store("pull", "-q", f"{layered.host}/layered@{digest}")
    assert pulled.stdout == f"{digest}\n" and pulled.stderr == ""
    ambiguous = store("rmi", image_id[:5])  # the start of an id: still both names'
    assert ambiguous.returncode == 125 and "remove them by name" in ambiguous.stderr
    removed = store("rmi", name, f"docker.io/../{name}")
    assert removed.stdout == f"removed {name}\n"
    assert "no such image: docker.io/../" in removed.stderr
    removed = store("rmi", image_id)  # the one image left with that id
    assert removed.stdout == f"removed {layered.host}/layered@{digest}\n", removed.stderr
    assert contents(store.home) == {"images": [], "layers": [], "": []}


def test_an_index_resolves_to_the_host_platform_or_the_one_asked(store, registry, test_layouts):
    registry.push(f"oci:{test_layouts['multiarch']}:latest", "multi:1")
    name = f"{registry.host}/multi:1"
    host = {"amd64": "linux/amd64", "arm64": "linux/arm64/v8"}[fixtures.host_architecture()]
    cases = [(None, host), ("linux/arm/v7", "linux/arm/v7"), ("linux/arm64", "linux/arm64/v8")]
    for platform, expected in cases:
        flags = ["--platform", platform] if platform else []
        pulled = store("pull", *flags, name)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout == f"{registry.pushed['multi:1']}\n"  # the index's digest
        shown = store(
            "run", "--rm", "--net", "none", "--pull", "never", name, "cat", "/etc/platform"
        )
        assert shown.stdout == f"{expected}\n", shown.stderr
    assert store("rmi", name).returncode == 0
    missing = store("pull", "--platform", "linux/s390x", name)
    assert missing.returncode == 125
    assert missing.stderr.splitlines() == [
        f"mycontainer: error: pull {name}: no image for platform linux/s390x (it has: "
        "linux/amd64, linux/arm/v7, linux/arm64/v8); choose one with --platform"
    ]
    assert contents(store.home)["images"] == []


def test_run_pulls_what_it_lacks_as_pull_says(store, layered):
    name = f"{layered.host}/layered:v1"
    run = ("run", "--rm", "--net", "none")
    never = store(*run, "--pull", "never", name, "true")
    assert never.returncode == 125
    assert never.stderr == f"mycontainer: error: no such image, file or directory: {name}\n"
    missing = store(*run, name, "cat", "/data/new.txt")
    assert (missing.returncode, missing.stdout) == (0, "new\n"), missing.stderr
    assert missing.stderr.startswith(f"pulling {name} from {layered.host}\n")
    config_requests = len(layered.log().splitlines())
    again = store(*run, name, "true")  # missing: stored, so the registry hears nothing
    assert again.returncode == 0 and again.stderr == ""
    assert len(layered.log().splitlines()) == config_requests
    always = store(*run, "--pull", "always", name, "true")
    assert always.returncode == 0 and "up to date" in always.stderr, always.stderr
    bad = store(*run, "--pull", "sometimes", name, "true")
    assert bad.returncode == 125 and "--pull is missing, always or never" in bad.stderr


def test_a_blob_whose_digest_does_not_match_leaves_the_store_as_it_was(
    store, layered, test_layouts
):
    name = f"{layered.host}/layered:v1"
    top = layout_layers(test_layouts["layered"])[-1]
    hexdigits = top.split(":")[1]
    data = os.path.join(layered.storage, "docker/registry/v2/blobs/sha256", hexdigits[:2],
                        hexdigits, "data")  # fmt: skip
    with open(data, "r+b") as file:  # the registry serves it as it is on disk
        file.seek(30)
        byte = file.read(1)
        file.seek(30)
        file.write(bytes([byte[0] ^ 0xFF]))
    before = contents(store.home)
    failed = store("pull", name)
    assert failed.returncode == 125
    lines = failed.stderr.splitlines()
    assert lines[-1].startswith(f"mycontainer: error: pull {name}: image {name}: blob {top}: ")
    assert sum(line.startswith("mycontainer: error") for line in lines) == 1
    assert contents(store.home) == before == {"images": [], "layers": [], "": []}


def test_a_missing_image_and_an_unreachable_registry_are_one_line(store, registry):
    for name, why in [
        (f"{registry.host}/nothing:1", "manifest 1: not found"),
        ("127.0.0.1:9/nothing", "cannot reach 127.0.0.1:9"),
        ("Upper/case", "invalid reference 'Upper/case'"),
    ]:
        failed = store("pull", name)
        assert failed.returncode == 125
        (line,) = failed.stderr.splitlines()
        assert line.startswith("mycontainer: error: ") and why in line, line
    assert contents(store.home)["images"] == []


def test_token_auth_anonymously_with_a_scope_per_repository(store, registry_factory, test_layouts):
    registry = registry_factory(auth="token")
    registry.push(f"oci:{test_layouts['layered']}:latest", "team/layered:v1")
    asked = len(registry.token_server.requests)
    pulled = store("pull", f"{registry.host}/team/layered:v1")
    assert pulled.returncode == 0, pulled.stderr
    requests = registry.token_server.requests[asked:]
    assert requests and all(r["account"] is None for r in requests)
    assert {scope for r in requests for scope in r["scopes"]} == {"repository:team/layered:pull"}
    assert "Bearer" not in pulled.stderr + pulled.stdout and "ey" not in pulled.stdout


def test_token_auth_refused_names_the_registry_and_what_to_do(
    store, registry_factory, test_layouts
):
    grants = {None: {"public/*": {"pull"}}, fixtures.PUSHER[0]: {"*": {"pull", "push"}}}
    registry = registry_factory(auth="token", grants=grants)
    registry.push(f"oci:{test_layouts['layered']}:latest", "private/layered:v1")
    failed = store("pull", f"{registry.host}/private/layered:v1")
    assert failed.returncode == 125
    (line,) = failed.stderr.splitlines()
    assert "(401)" in line and f"mycontainer login {registry.host}" in line, line


def test_basic_auth_without_credentials_says_to_log_in(store, registry_factory, test_layouts):
    registry = registry_factory(auth="basic", users={"ann": "secret"})
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    failed = store("pull", f"{registry.host}/layered:v1")
    assert failed.returncode == 125
    (line,) = failed.stderr.splitlines()
    assert f"'mycontainer login {registry.host}' first" in line, line


def test_tls_is_verified_against_the_system_cas_or_ssl_cert_file(
    store, registry_factory, test_layouts
):
    registry = registry_factory(tls=True)
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    name = f"{registry.host}/layered:v1"
    untrusted = store("pull", name)
    assert untrusted.returncode == 125
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr
    assert contents(store.home)["images"] == []
    trusted = store("pull", name, env={"SSL_CERT_FILE": registry.ca})
    assert trusted.returncode == 0, trusted.stderr
    assert store("rmi", name).returncode == 0
    unverified = store("pull", "--tls-verify=false", name)
    assert unverified.returncode == 0, unverified.stderr


# --- credentials ---------------------------------------------------------------------------


def auth_file(tmp_path, host: str, user: str, secret: str) -> dict:
    """The environment of a pull whose credentials file (podman's REGISTRY_AUTH_FILE, in
    docker's format) holds ``user``'s for ``host``."""
    import base64

    path = tmp_path / "auth.json"
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return {"REGISTRY_AUTH_FILE": str(path)}


def test_basic_auth_with_the_credentials_login_stores(
    store, registry_factory, test_layouts, tmp_path
):
    registry = registry_factory(auth="basic", users={"ann": "s3cret-pass"})
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    name = f"{registry.host}/layered:v1"
    pulled = store("pull", name, env=auth_file(tmp_path, registry.host, "ann", "s3cret-pass"))
    assert pulled.returncode == 0, pulled.stderr
    assert "s3cret-pass" not in pulled.stdout + pulled.stderr
    assert store("rmi", name).returncode == 0
    wrong = store("pull", name, env=auth_file(tmp_path, registry.host, "ann", "wrong"))
    assert wrong.returncode == 125
    (line,) = wrong.stderr.splitlines()
    assert "authentication failed (401)" in line and "wrong" not in line, line
    assert contents(store.home)["images"] == []


def test_token_auth_with_credentials_gets_the_users_grants(
    store, registry_factory, test_layouts, tmp_path
):
    grants = {None: {}, "ann": {"private/*": {"pull"}}, fixtures.PUSHER[0]: {"*": {"pull", "push"}}}
    registry = registry_factory(auth="token", users={"ann": "pw-of-ann"}, grants=grants)
    registry.push(f"oci:{test_layouts['layered']}:latest", "private/layered:v1")
    asked = len(registry.token_server.requests)
    env = auth_file(tmp_path, registry.host, "ann", "pw-of-ann")
    pulled = store("pull", f"{registry.host}/private/layered:v1", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert {r["account"] for r in registry.token_server.requests[asked:]} == {"ann"}
    refused = store("pull", f"{registry.host}/private/layered:v1",
                    env=auth_file(tmp_path, registry.host, "ann", "not-hers"))  # fmt: skip
    assert refused.returncode == 125
    assert "the token server refused our credentials (401)" in refused.stderr


# --- faults --------------------------------------------------------------------------------

pytest_plugins.append("faultproxy")


@pytest.fixture
def proxied(layered, fault_proxy, test_layouts):
    """(the fault proxy in front of the layered image's registry, the image's name there,
    the digest of its big bottom layer)."""
    proxy = fault_proxy(layered)
    return proxy, f"{proxy.host}/layered:v1", layout_layers(test_layouts["layered"])[0]


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_a_blob_cut_midway_resumes_with_a_range_request(store, proxied, kind):
    proxy, name, bottom = proxied
    fault = proxy.add(kind, f"/blobs/{bottom}$", after=200_000)
    pulled = store("pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert fault.hits == 1
    ranges = [r.range for r in proxy.requests if r.path.endswith(bottom)]
    assert len(ranges) == 2 and ranges[0] is None, ranges
    # a reset may lose what the kernel had received and not yet handed over; a FIN does not
    resumed_at = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert (0 < resumed_at <= 200_000) if kind == "drop" else resumed_at == 200_000
    result = store("run", "--rm", "--net", "none", name, "sh", "-c", MERGED_VIEW)
    assert result.stdout == MERGED_EXPECTED, result.stderr


def test_a_stall_midway_times_out_and_resumes(store, proxied):
    proxy, name, bottom = proxied
    proxy.add("stall", f"/blobs/{bottom}$", after=100_000, seconds=30)
    pulled = store("pull", name, env={"MYCONTAINER_REGISTRY_TIMEOUT": "1"})
    assert pulled.returncode == 0, pulled.stderr
    assert [r.range for r in proxy.requests if r.path.endswith(bottom)] == [None, "bytes=100000-"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried_with_backoff(store, proxied, status):
    proxy, name, _bottom = proxied
    proxy.add("status", r"/manifests/", status=status, times=2)
    pulled = store("pull", name)
    assert pulled.returncode == 0, pulled.stderr
    statuses = [r.status for r in proxy.requests if "/manifests/" in r.path]
    assert statuses[:3] == [status, status, 200]


@pytest.mark.parametrize(
    ("where", "status", "message"),
    [
        (r"/manifests/", 404, "manifest v1: not found (or no access without logging in) (404)"),
        (r"/manifests/", 403, "manifest v1: access denied (or no access without logging in) (403)"),
        (r"/manifests/", 401, "manifest v1: authentication required (401): 'mycontainer login"),
        (r"/manifests/", 429, "manifest v1: too many requests: the registry limits pulls"),
        (r"/blobs/", 500, ": the registry failed (500)"),
    ],
)
def test_bad_answers_are_one_line_and_leave_the_store_as_it_was(
    store, proxied, where, status, message
):
    proxy, name, _bottom = proxied
    proxy.add("status", where, status=status, times=-1)
    failed = store("pull", name)
    assert failed.returncode == 125
    (line,) = failed.stderr.splitlines()[-1:]
    assert line.startswith(f"mycontainer: error: pull {name}: ") and message in line, line
    assert sum("error" in each for each in failed.stderr.splitlines()) == 1
    assert contents(store.home)["images"] == [] and contents(store.home)["layers"] == []


def test_a_flipped_byte_is_refused(store, proxied):
    proxy, name, bottom = proxied
    proxy.add("flip", f"/blobs/{bottom}$", times=-1)
    failed = store("pull", name)
    assert failed.returncode == 125
    assert f"blob {bottom}: " in failed.stderr.splitlines()[-1]
    assert contents(store.home)["images"] == [] and contents(store.home)["layers"] == []


def test_a_stalled_server_ends_in_time(store, proxied):
    proxy, name, _bottom = proxied
    proxy.add("stall", r"/manifests/", seconds=60, times=-1)
    failed = store("pull", name, env={"MYCONTAINER_REGISTRY_TIMEOUT": "1"}, timeout=30)
    assert failed.returncode == 125
    assert "no answer in time" in failed.stderr, failed.stderr


def upload(registry, name: str, data: bytes, media_type: str = "") -> dict:
    """Put blob ``data`` into repository ``name`` through the API (POST, then PUT with its
    digest: distribution-spec's monolithic upload), or the manifest ``data`` as tag
    ``latest`` when ``media_type`` is given; its descriptor. (skopeo refuses what a test
    needs here: a config over 4 MiB.)"""
    import hashlib
    import urllib.request

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if media_type:
        url, method, headers = f"{registry.url}/v2/{name}/manifests/latest", "PUT", {}
        headers["Content-Type"] = media_type
    else:
        post = urllib.request.Request(f"{registry.url}/v2/{name}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(post, timeout=30) as answer:
            location = answer.headers["Location"]
        separator = "&" if "?" in location else "?"
        url = f"{registry.url}{location}" if location.startswith("/") else location
        url, method, headers = f"{url}{separator}digest={digest}", "PUT", {}
        headers["Content-Type"] = "application/octet-stream"
    put = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(put, timeout=30):
        pass
    return {"mediaType": media_type or fixtures.OCI_CONFIG, "digest": digest, "size": len(data)}


def test_a_config_over_the_bound_is_refused(store, registry):
    layer = gzip.compress(fixtures.tar_of([fixtures.entry("a", b"a\n")]))
    layer_descriptor = dict(upload(registry, "big", layer), mediaType=fixtures.OCI_LAYER)
    config = {"architecture": fixtures.host_architecture(), "os": "linux",
              "config": {"Labels": {"big": "x" * (5 << 20)}},
              "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip
    manifest = {"schemaVersion": 2, "mediaType": fixtures.OCI_MANIFEST,
                "layers": [layer_descriptor],
                "config": upload(registry, "big", json.dumps(config).encode())}  # fmt: skip
    upload(registry, "big", json.dumps(manifest).encode(), fixtures.OCI_MANIFEST)
    failed = store("pull", f"{registry.host}/big")
    assert failed.returncode == 125
    assert "over the 4 MiB bound" in failed.stderr.splitlines()[-1], failed.stderr
    assert contents(store.home)["images"] == []


# --- redirects, proxies --------------------------------------------------------------------


@contextlib.contextmanager
def redirector(target: str, certificates=None, password: str | None = None):
    """A registry front on 127.0.0.1 that answers the ping itself and sends every other
    request to ``target`` (a base URL) with a 307, as registries send blobs to object
    storage; over TLS with the session's server certificate if ``certificates``; asking for
    HTTP basic auth (user ``u``, ``password``) if given. Yields (its host, the requests it
    got: (path, their Authorization header))."""
    import base64

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            expected = "Basic " + base64.b64encode(f"u:{password}".encode()).decode()
            if password and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(307)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if certificates:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.server, certificates.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_are_not_sent_on_to_another_host(store, layered, tmp_path):
    """A registry's Authorization header goes to that registry only: not to the object
    storage that it redirects blobs to (a token there would be a token leaked)."""
    with (
        redirector(layered.url) as (storage, stored),
        redirector(f"http://{storage}", password="pw-9") as (host, seen),
    ):
        pulled = store("pull", f"{host}/layered:v1", env=auth_file(tmp_path, host, "u", "pw-9"))
        assert pulled.returncode == 0, pulled.stderr
    assert all(authorization for path, authorization in seen if path != "/v2/")
    assert [authorization for _path, authorization in stored] == [None] * len(stored)
    assert len(stored) >= 4  # the manifest, the config and the three layers went there


def test_redirects_are_followed_but_never_from_https_to_http(store, layered, test_layouts):
    with redirector(layered.url) as (host, seen):
        pulled = store("pull", f"{host}/layered:v1")
        assert pulled.returncode == 0, pulled.stderr
        redirected = [path for path, _ in seen if "/blobs/" in path]
        assert len(redirected) == 1 + len(layout_layers(test_layouts["layered"]))  # + config
        assert store("rmi", f"{host}/layered:v1").returncode == 0
    with redirector(layered.url, layered.certificates) as (host, seen):
        name = f"{host}/layered:v1"
        failed = store("pull", name, env={"SSL_CERT_FILE": layered.certificates.ca})
        assert failed.returncode == 125
        assert failed.stderr == (
            f"mycontainer: error: pull {name}: /v2/layered/manifests/v1: redirected to plain "
            f"HTTP ({layered.host}), refused: the bytes could be changed on their way\n"
        )
    assert contents(store.home)["images"] == []


@contextlib.contextmanager
def forward_proxy():
    """An HTTP proxy on 127.0.0.1 (absolute-URI GETs, RFC 9112 3.2.2; CONNECT tunnels for
    HTTPS, RFC 9110 9.3.6) that forwards to the host each request names; yields (its URL,
    the URLs it forwarded and the hosts it tunnelled to)."""
    forwarded = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_CONNECT(self) -> None:  # noqa: N802 (http.server's name)
            forwarded.append(f"CONNECT {self.path}")
            host, _, port = self.path.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=30)
            self.send_response(200)
            self.end_headers()

            def pump(source, sink) -> None:
                with contextlib.suppress(OSError):
                    while data := source.recv(65536):
                        sink.sendall(data)
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)

            back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
            back.start()
            pump(self.connection, upstream)
            back.join(timeout=30)
            upstream.close()
            self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            forwarded.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            upstream = http.client.HTTPConnection(url.netloc, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
            upstream.request("GET", url.path + (f"?{url.query}" if url.query else ""),
                             headers=headers)  # fmt: skip
            answer = upstream.getresponse()
            body = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            upstream.close()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", forwarded
    finally:
        server.shutdown()
        server.server_close()


def test_https_goes_through_the_proxys_tunnel(store, registry_factory, test_layouts):
    registry = registry_factory(tls=True)
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    with forward_proxy() as (proxy, forwarded):
        env = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        env["SSL_CERT_FILE"] = registry.ca
        pulled = store("pull", f"{registry.host}/layered:v1", env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert f"CONNECT {registry.host}" in forwarded


def test_the_proxy_the_environment_names_is_used_unless_no_proxy_says(store, layered):
    name = f"{layered.host}/layered:v1"
    with forward_proxy() as (proxy, forwarded):
        env = {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        pulled = store("pull", name, env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert f"http://{layered.host}/v2/layered/manifests/v1" in forwarded
        assert store("rmi", name).returncode == 0
        count = len(forwarded)
        bypassed = store("pull", name, env=dict(env, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"))
        assert bypassed.returncode == 0, bypassed.stderr
        assert len(forwarded) == count


def test_ctrl_c_midway_leaves_the_store_as_it_was(store, proxied, state_root):
    proxy, name, bottom = proxied
    proxy.add("stall", f"/blobs/{bottom}$", after=100_000, seconds=60)
    environment = dict(os.environ, MYCONTAINER_HOME=str(store.home),
                       MYCONTAINER_STATE=str(state_root))  # fmt: skip
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    pulling = subprocess.Popen(
        [sys.executable, "-m", "runtime", "pull", name],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(r.path.endswith(bottom) for r in proxy.requests):
            assert pulling.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the other layers unpacked and waiting, the bottom one unpacking
        pulling.send_signal(signal.SIGINT)
        _, errors = pulling.communicate(timeout=30)
    finally:
        pulling.kill()
    assert pulling.returncode == 130, errors
    assert errors.endswith("mycontainer: error: interrupted by SIGINT\n")
    assert contents(store.home) == {"images": [], "layers": [], "": []}


@contextlib.contextmanager
def odd_registry(content_type: str, body: bytes):
    """A server that pings as a registry and answers every manifest with ``body`` of type
    ``content_type``: what a broken or hostile registry, or a captive portal, may send."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            data = b"{}" if self.path == "/v2/" else body
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if data == b"{}" else content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (SCHEMA1, json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode(),
         "manifest v1 is of schema 1, which docker deprecated in 2016"),
        ("application/json", json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
         "manifest v1 is of schema 1"),
        ("text/html", b"<html>log in to the wifi</html>",
         "manifest v1: the registry answered 'text/html', not an image manifest or index"),
        (fixtures.OCI_MANIFEST, json.dumps({"schemaVersion": 2, "mediaType": fixtures.OCI_INDEX,
                                            "manifests": []}).encode(),
         f"says it is '{fixtures.OCI_INDEX}', but came as '{fixtures.OCI_MANIFEST}'"),
        (fixtures.OCI_MANIFEST, b"{" + b" " * (5 << 20) + b"}",
         "manifest v1 is 5242882 bytes, over the 4 MiB bound"),
        (fixtures.OCI_MANIFEST, b"[1, 2]", "manifest v1 is not a JSON object"),
        (fixtures.OCI_MANIFEST, json.dumps({"schemaVersion": 2, "config": {"digest": DIGEST},
                                            "layers": [{"digest": DIGEST, "size": "9"}]}).encode(),
         'malformed image metadata: manifest sha256:'),
        (fixtures.OCI_MANIFEST, json.dumps({"schemaVersion": 2, "layers": []}).encode(),
         'field "config" must be an object (it is missing)'),
    ],
)  # fmt: skip
def test_manifests_of_the_wrong_kind_are_refused(store, content_type, body, message):
    with odd_registry(content_type, body) as host:
        failed = store("pull", f"{host}/odd:v1")
    assert failed.returncode == 125
    assert failed.stderr.startswith(f"mycontainer: error: pull {host}/odd:v1: ")
    assert message in failed.stderr and failed.stderr.count("\n") == 1, failed.stderr
    assert contents(store.home)["images"] == []


def test_progress_is_a_line_per_layer_redrawn_on_a_terminal(
    store, layered, state_root, test_layouts
):
    import pty

    environment = dict(os.environ, MYCONTAINER_HOME=str(store.home),
                       MYCONTAINER_STATE=str(state_root), TERM="xterm")  # fmt: skip
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    controller, terminal = pty.openpty()
    try:
        pulled = subprocess.run(
            [sys.executable, "-m", "runtime", "pull", f"{layered.host}/layered:v1"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO: the terminal's other end is closed
            while chunk := os.read(controller, 65536):
                shown += chunk
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert pulled.returncode == 0
    screen = shown.decode()
    assert "\x1b[3A" in screen  # three lines, redrawn in place
    last = screen.rsplit("\x1b[3A", 1)[-1]  # the last picture: a line per layer, done
    lines = [line.split(" (")[0] for line in last.split("\r\x1b[K")[1:]]
    assert lines == [f"{d[7:19]}: pull complete" for d in layout_layers(test_layouts["layered"])]
    assert last.count("pull complete") == 3, screen


@pytest.mark.parametrize("what", ["manifests/v1", "config"])
def test_a_manifest_or_config_cut_short_is_asked_for_again(store, proxied, test_layouts, what):
    proxy, name, _bottom = proxied
    if what == "config":
        with open(os.path.join(test_layouts["layered"], "index.json")) as file:
            manifest = json.load(file)["manifests"][0]["digest"].split(":")[1]
        with open(os.path.join(test_layouts["layered"], "blobs", "sha256", manifest)) as file:
            what = "blobs/" + json.load(file)["config"]["digest"]
    fault = proxy.add("drop", f"/{what}$", after=100, times=2)
    pulled = store("pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert fault.hits == 2


def test_pulls_at_once_unpack_each_layer_once(store, layered, state_root, test_layouts):
    """Two pulls of one image, and a second name of it, at once: each layer is fetched and
    unpacked by one of them (the store's claims, runtime.image._Claims), all succeed."""
    layered.push(f"oci:{test_layouts['layered']}:latest", "twin:v1")
    environment = dict(os.environ, MYCONTAINER_HOME=str(store.home),
                       MYCONTAINER_STATE=str(state_root))  # fmt: skip
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    names = [f"{layered.host}/layered:v1", f"{layered.host}/layered:v1", f"{layered.host}/twin:v1"]
    pulls = [
        subprocess.Popen([sys.executable, "-m", "runtime", "pull", "-q", name], env=environment,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    ]  # fmt: skip
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in pulls]
    for pull in pulls:
        pull.stdout.close()
        pull.stderr.close()
    assert [code for code, _, _ in results] == [0, 0, 0], results
    layers = layout_layers(test_layouts["layered"])
    assert [blob_requests(layered, digest) for digest in layers] == [1] * len(layers)
    assert len(contents(store.home)["layers"]) == len(layers)
    assert contents(store.home)[""] == []
    for name in names[1:]:
        result = store("run", "--rm", "--net", "none", "--pull", "never", name, "sh", "-c",
                       MERGED_VIEW)  # fmt: skip
        assert result.stdout == MERGED_EXPECTED, result.stderr
