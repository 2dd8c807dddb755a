"""The fault proxy (tests/faultproxy.py) in front of a real registry: each fault does what it
says, once (or ``times``), and the proxy serves faithfully otherwise; checked with the
standard library's http.client, which hides nothing, and with skopeo."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import threading
import time

import pytest
from faultproxy import BLOBS, MANIFESTS, REDIRECTED, FaultProxy

pytest_plugins = ["registry", "faultproxy"]
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


@pytest.fixture
def served(registry, test_layouts, fault_proxy):
    """(registry, proxy, blob path, blob bytes): the layered image pushed, a proxy before it,
    and its biggest layer, the busybox rootfs."""
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    manifest = json.loads(fetch(registry.host, "/v2/layered/manifests/v1", ACCEPT)[2])
    layer = max(manifest["layers"], key=lambda layer: layer["size"])
    path = f"/v2/layered/blobs/{layer['digest']}"
    blob = fetch(registry.host, path)[2]
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    return registry, fault_proxy(registry), path, blob


def connection(host: str, timeout: float = 10, ca: str | None = None):
    if ca:
        context = ssl.create_default_context(cafile=ca)
        return http.client.HTTPSConnection(host, timeout=timeout, context=context)
    return http.client.HTTPConnection(host, timeout=timeout)


def fetch(host, path, headers=None, *, method="GET", timeout=10, ca=None) -> tuple:
    """(status, headers, body) of one request on a connection of its own."""
    client = connection(host, timeout, ca)
    try:
        client.request(method, path, headers=headers or {})
        response = client.getresponse()
        return response.status, response.headers, response.read()
    finally:
        client.close()


def test_without_faults_the_proxy_serves_what_the_registry_does(served):
    registry, proxy, path, blob = served
    direct = fetch(registry.host, "/v2/layered/manifests/v1", ACCEPT)
    through = fetch(proxy.host, "/v2/layered/manifests/v1", ACCEPT)
    assert through[0] == 200 and through[2] == direct[2]
    assert through[1]["Docker-Content-Digest"] == direct[1]["Docker-Content-Digest"]
    assert fetch(proxy.host, path)[2] == blob
    status, headers, body = fetch(proxy.host, path, method="HEAD")
    assert (status, int(headers["Content-Length"]), body) == (200, len(blob), b"")
    status, _, body = fetch(proxy.host, path, {"Range": "bytes=1000-"})
    assert (status, body) == (206, blob[1000:])  # a resume goes through
    assert [r.range for r in proxy.requests if r.path == path] == [None, None, "bytes=1000-"]
    # Keep-alive: several requests on one connection, as clients pool them.
    client = connection(proxy.host)
    for _ in range(3):
        client.request("GET", "/v2/")
        assert client.getresponse().read() == b"{}"
    client.close()


def test_drop_resets_the_connection_mid_blob_once_then_serves(served):
    _, proxy, path, blob = served
    fault = proxy.add("drop", BLOBS, after=4096)
    client = connection(proxy.host)
    client.request("GET", path)
    response = client.getresponse()
    assert int(response.headers["Content-Length"]) == len(blob)
    got = b""
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        while chunk := response.read1(65536):
            got += chunk
        raise http.client.IncompleteRead(got)  # a FIN, not the RST expected
    assert got == blob[: len(got)] and len(got) <= 4096
    client.close()
    assert fetch(proxy.host, path)[2] == blob
    assert fault.hits == 1 and [r.fault for r in proxy.requests] == ["drop", None]


def test_truncate_ends_the_body_short_of_its_length(served):
    _, proxy, path, blob = served
    proxy.add("truncate", BLOBS, after=1000)
    with pytest.raises(http.client.IncompleteRead) as cut:
        fetch(proxy.host, path)
    assert cut.value.partial == blob[:1000]
    assert fetch(proxy.host, path)[2] == blob


def test_flip_inverts_one_byte(served):
    _, proxy, path, blob = served
    proxy.add("flip", BLOBS)
    status, _, body = fetch(proxy.host, path)
    assert status == 200 and len(body) == len(blob)
    assert [i for i in range(len(blob)) if body[i] != blob[i]] == [len(blob) // 2]
    assert body[len(blob) // 2] == blob[len(blob) // 2] ^ 0xFF
    proxy.add("flip", MANIFESTS, offset=0)
    manifest = fetch(proxy.host, "/v2/layered/manifests/v1", ACCEPT)[2]
    assert manifest[0] == ord("{") ^ 0xFF


def test_stall_before_the_answer_and_mid_body(served):
    _, proxy, path, blob = served
    proxy.add("stall", MANIFESTS, seconds=3)
    with pytest.raises(TimeoutError):
        fetch(proxy.host, "/v2/layered/manifests/v1", ACCEPT, timeout=0.5)
    proxy.add("stall", BLOBS, after=100, seconds=1.5)
    client = connection(proxy.host, timeout=0.5)
    client.request("GET", path)
    response = client.getresponse()
    assert response.read(100) == blob[:100]
    with pytest.raises(TimeoutError):
        response.read(1)  # nothing more for 1.5 s
    client.close()
    # A patient client gets it all, late.
    proxy.add("stall", BLOBS, after=100, seconds=1)
    started = time.monotonic()
    assert fetch(proxy.host, path, timeout=10)[2] == blob
    assert time.monotonic() - started >= 1


def test_status_answers_429_with_retry_after_then_passes(served):
    _, proxy, path, blob = served
    proxy.add("status", BLOBS, status=429, retry_after="2")
    status, headers, body = fetch(proxy.host, path)
    assert (status, headers["Retry-After"]) == (429, "2")
    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert fetch(proxy.host, path)[0] == 200
    proxy.add("status", BLOBS, status=503, times=2)
    assert [fetch(proxy.host, path)[0] for _ in range(3)] == [503, 503, 200]
    assert [r.status for r in proxy.requests][-3:] == [503, 503, 200]


def test_faults_apply_to_their_path_and_method_only(served):
    _, proxy, path, blob = served
    proxy.add("status", MANIFESTS, status=500, method="HEAD", times=-1)
    assert fetch(proxy.host, path)[2] == blob  # a blob: untouched
    assert fetch(proxy.host, "/v2/layered/manifests/v1", ACCEPT)[0] == 200  # a GET: untouched
    for _ in range(2):  # times=-1: every time
        assert fetch(proxy.host, "/v2/layered/manifests/v1", ACCEPT, method="HEAD")[0] == 500
    with pytest.raises(ValueError, match="fault kind must be one of"):
        proxy.add("explode")


def test_close_ends_a_stall_at_once(served):
    registry, _, path, _ = served
    proxy = FaultProxy(registry.host)
    proxy.add("stall", BLOBS, seconds=60)
    ended = []

    def stalled_fetch() -> None:
        try:
            fetch(proxy.host, path, timeout=30)
        except (http.client.HTTPException, OSError) as error:
            ended.append(error)

    thread = threading.Thread(target=stalled_fetch)
    thread.start()
    while not proxy.requests:
        time.sleep(0.01)
    started = time.monotonic()
    proxy.close()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5 and not thread.is_alive()
    assert ended, "the stalled request should end without an answer"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(proxy.host.split(":")[1])), timeout=2)


def test_tls_proxy_shows_the_registry_certificate(registry_factory, test_layouts, fault_proxy):
    registry = registry_factory(tls=True)
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    proxy = fault_proxy(registry)
    assert proxy.url.startswith("https://")
    assert fetch(proxy.host, "/v2/", ca=registry.ca)[0] == 200
    proxy.add("drop", BLOBS)  # the config blob, which inspect reads
    command = ["skopeo", "inspect", "--cert-dir", registry.cert_dir]
    command.append(f"docker://{proxy.host}/layered:v1")
    dropped = subprocess.run(command, capture_output=True, text=True)
    assert "connection reset by peer" in dropped.stderr
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def skopeo_copy(proxy, destination) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["skopeo", "copy", "--retry-times", "3", "--src-tls-verify=false"]
        + [f"docker://{proxy.host}/layered:v1", f"oci:{destination}:v1"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_skopeo_retries_through_429s_and_a_drop_not_a_truncation(served, tmp_path):
    """A real client meets the faults: skopeo (with --retry-times) waits out a 429 and
    retries a connection reset mid-layer, but takes a clean early end as fatal."""
    _, proxy, path, blob = served
    proxy.add("status", MANIFESTS, status=429, retry_after="1")
    proxy.add("status", BLOBS, status=429)
    proxy.add("drop", path, after=50_000)  # the busybox layer, mid-way
    copy = skopeo_copy(proxy, tmp_path / "copy")
    assert copy.returncode == 0, copy.stderr
    assert "connection reset by peer" in copy.stderr  # its warning, before its retry
    copied = tmp_path / "copy" / "blobs" / "sha256" / path.rsplit(":", 1)[1]
    assert copied.read_bytes() == blob
    faults = [(r.fault, r.status) for r in proxy.requests if r.fault]
    assert sorted(faults) == [("drop", 200), ("status", 429), ("status", 429)]

    proxy.add("truncate", path, after=50_000)
    truncated = skopeo_copy(proxy, tmp_path / "again")
    assert truncated.returncode != 0 and "unexpected EOF" in truncated.stderr


def test_redirect_sends_blobs_to_storage_that_answers_ranges(served):
    _, proxy, path, blob = served
    proxy.add("redirect", BLOBS)
    status, headers, _ = fetch(proxy.host, path)
    assert (status, headers["Location"]) == (307, f"{proxy.url}{REDIRECTED}{path}")
    stored = REDIRECTED + path
    assert fetch(proxy.host, stored)[2] == blob
    status, headers, body = fetch(proxy.host, stored, {"Range": "bytes=100-"})
    assert (status, body) == (206, blob[100:])
    assert headers["Content-Range"] == f"bytes 100-{len(blob) - 1}/{len(blob)}"
    assert fetch(proxy.host, stored, {"Range": "bytes=5-9"})[2] == blob[5:10]
    assert fetch(proxy.host, stored, {"Range": f"bytes={len(blob)}-"})[0] == 416
    assert fetch(proxy.host, REDIRECTED + path.replace(path[-64:], "0" * 64))[0] == 404
    proxy.add("drop", "^" + REDIRECTED, after=1000)  # faults apply there too
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        fetch(proxy.host, stored)
    # Elsewhere, and in plain HTTP: what a client on HTTPS must refuse to follow.
    proxy.add("redirect", BLOBS, location="http://storage.invalid{path}", status=302)
    status, headers, _ = fetch(proxy.host, path)
    assert (status, headers["Location"]) == (302, f"http://storage.invalid{path}")
    assert [r.authorization for r in proxy.requests] == [False] * len(proxy.requests)


def test_skopeo_follows_a_redirect_of_a_token_registry(
    registry_factory, test_layouts, fault_proxy, tmp_path
):
    registry = registry_factory(auth="token")
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    proxy = fault_proxy(registry)
    proxy.add("redirect", BLOBS, times=-1)
    copy = skopeo_copy(proxy, tmp_path / "copy")
    assert copy.returncode == 0, copy.stderr
    redirected = [r for r in proxy.requests if r.path.startswith(REDIRECTED)]
    assert len(redirected) == 4 and {r.status for r in redirected} == {200}  # config, 3 layers
    assert all(r.authorization for r in proxy.requests if r.path.startswith("/v2/layered"))
