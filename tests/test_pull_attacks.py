"""``mycontainer pull`` against a hostile registry: a stdlib HTTP server of this file that
answers what a broken or malicious registry could (tests/test_pull.py pulls from a real one).

Each attack must end in bounded time, in one line on stderr (exit 125), with the store as it
was: no record, no layer, nothing left at its top.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import registry as fixtures
from test_pull import auth_file, contents, store  # noqa: F401 (store: a fixture)

from conftest import REPO

pytestmark = pytest.mark.privileged
pytest_plugins = ["registry"]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(layers: list[bytes], diff_ids: list[str] | None = None) -> dict[str, bytes]:
    """The blobs and manifest of an image of gzipped tar ``layers`` (bottom first), as a
    registry serves them: {path under /v2/evil/: body}; ``diff_ids`` as the config lies."""
    compressed = [gzip.compress(layer, mtime=0) for layer in layers]
    config = {
        "architecture": fixtures.host_architecture(),
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": [digest_of(layer) for layer in layers] if diff_ids is None else diff_ids,
        },
    }
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": fixtures.OCI_MANIFEST,
        "config": descriptor(config_bytes, fixtures.OCI_CONFIG),
        "layers": [descriptor(blob, fixtures.OCI_LAYER) for blob in compressed],
    }
    paths = {f"blobs/{digest_of(blob)}": blob for blob in [config_bytes, *compressed]}
    paths["manifests/v1"] = json.dumps(manifest).encode()
    return paths


def descriptor(data: bytes, media_type: str) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


LAYER = fixtures.tar_of([fixtures.entry("a.txt", b"a\n")])


class Hostile:
    """A registry on 127.0.0.1 (plain HTTP: loopback; TLS with ``certificates``) that pings,
    then serves ``paths`` ({path under /v2/evil/, or "/v2/": body, or a function(handler)
    that answers itself}). ``seen``: the paths asked, in order."""

    def __init__(self, paths: dict, certificates=None):
        self.paths = paths
        self.seen: list[str] = []
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hostile.seen.append(self.path)
                if self.path == "/v2/" and "/v2/" not in hostile.paths:
                    return answer(self, 200, b"{}", "application/json")
                found = hostile.paths.get(self.path.removeprefix("/v2/evil/"))
                if callable(found):
                    return found(self)
                if found is None:
                    return answer(self, 404, b"{}", "application/json")
                kind = fixtures.OCI_MANIFEST if "/manifests/" in self.path else ""
                return answer(self, 200, found, kind or "application/octet-stream")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if certificates:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificates.server, certificates.server_key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Hostile:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exception) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(handler, status: int, body: bytes, kind: str = "", headers: dict | None = None):
    handler.send_response(status)
    if kind:
        handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def refused(store, host: str, message: str, timeout: float = 60, env=None):  # noqa: F811
    """Pull evil:v1 from ``host``: it must fail with ``message`` in one line, the store as
    it was."""
    started = time.monotonic()
    failed = store("pull", f"{host}/evil:v1", env=env, timeout=timeout)
    took = time.monotonic() - started
    assert failed.returncode == 125, failed.stderr
    last = failed.stderr.splitlines()[-1] if failed.stderr else ""
    assert last.startswith(f"mycontainer: error: pull {host}/evil:v1: "), failed.stderr
    assert message in last, failed.stderr
    assert contents(store.home) == {"images": [], "layers": [], "": []}
    return took


def test_a_config_that_lists_no_diff_ids_for_the_manifests_layers_is_refused(store):  # noqa: F811
    paths = image([LAYER], diff_ids=[])
    with Hostile(paths) as hostile:
        refused(store, hostile.host, "lists 0 diff_ids for the manifest's 1 layers")
    assert not any("/blobs/" in path for path in hostile.seen[3:]), hostile.seen  # config only


def trickle(body: bytes, kind: str = "application/octet-stream"):
    """An answer that announces ``body`` whole, then sends a byte every tenth of a second:
    never a read timeout, never an end."""

    def send(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.1)

    return send


@pytest.mark.parametrize("what", ["manifest", "config", "layer"])
def test_a_server_that_trickles_forever_ends_in_bounded_time(store, what):  # noqa: F811
    paths = image([fixtures.tar_of([fixtures.entry("noise", os.urandom(65536))])])
    manifest = json.loads(paths["manifests/v1"])
    path = {
        "manifest": "manifests/v1",
        "config": f"blobs/{manifest['config']['digest']}",
        "layer": f"blobs/{manifest['layers'][0]['digest']}",
    }[what]
    kind = fixtures.OCI_MANIFEST if what == "manifest" else "application/octet-stream"
    paths[path] = trickle(paths[path] + b" " * (1 << 20), kind)  # (a few days' worth)
    env = {"MYCONTAINER_REGISTRY_TIMEOUT": "1"}
    with Hostile(paths) as hostile:
        took = refused(store, hostile.host, "too slow", timeout=90, env=env)
    assert took < 45


def manifest_of(paths: dict) -> dict:
    return json.loads(paths["manifests/v1"])


def with_manifest(paths: dict, change) -> dict:
    """``paths`` with its manifest changed by ``change(manifest)``."""
    manifest = manifest_of(paths)
    change(manifest)
    return dict(paths, **{"manifests/v1": json.dumps(manifest).encode()})


def layer_field(field: str, value):
    return lambda manifest: manifest["layers"][0].update({field: value})


def index(target: bytes) -> bytes:
    """An index whose one manifest for this host is ``target``, said to be an index."""
    platform = {"os": "linux", "architecture": fixtures.host_architecture()}
    entry = dict(descriptor(target, fixtures.OCI_INDEX), platform=platform)
    return json.dumps(
        {"schemaVersion": 2, "mediaType": fixtures.OCI_INDEX, "manifests": [entry]}
    ).encode()


def served_as_index(body: bytes):
    return lambda handler: answer(handler, 200, body, fixtures.OCI_INDEX)


DIGEST = "sha256:" + "ab" * 32
CASES = {
    "a negative size": (layer_field("size", -1), '"layers[0].size" must be a size'),
    "a size of true": (layer_field("size", True), '"layers[0].size" must be a size'),
    "a sha512 digest": (layer_field("digest", "sha512:" + "ab" * 64), "layers[0].digest"),
    "a digest with a path": (layer_field("digest", "sha256:../../x"), "layers[0].digest"),
    "10,000 layers": (
        lambda manifest: manifest.update(layers=manifest["layers"] * 10000),
        "has 10000 layers, over the 500 that overlayfs can stack",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_descriptors_are_refused_before_any_layer_is_fetched(store, case):  # noqa: F811
    change, message = CASES[case]
    paths = with_manifest(image([LAYER]), change)
    with Hostile(paths) as hostile:
        refused(store, hostile.host, message)
    layers = {f"/v2/evil/blobs/{d['digest']}" for d in manifest_of(paths)["layers"]}
    assert not layers & set(hostile.seen), hostile.seen


def test_an_index_that_names_an_index_is_refused(store):  # noqa: F811
    inner = index(b"{}")  # (an index cannot name itself: its digest would be its content's)
    outer = index(inner)
    paths = {
        "manifests/v1": served_as_index(outer),
        f"manifests/{digest_of(inner)}": served_as_index(inner),
    }
    with Hostile(paths) as hostile:
        refused(store, hostile.host, "an index in an index (refused)")
    assert len(hostile.seen) == 3, hostile.seen  # the ping, the index, the inner one


def test_a_config_that_is_not_json_or_lies_about_diff_ids_is_refused(store):  # noqa: F811
    other = fixtures.tar_of([fixtures.entry("b.txt", b"b\n")])
    with Hostile(image([LAYER], diff_ids=[digest_of(other)])) as hostile:
        refused(store, hostile.host, f"not the config's {digest_of(other)}")
    paths = image([LAYER])
    config = b"\xff not json"
    paths = with_manifest(paths, lambda m: m.update(config=descriptor(config, "x")))
    paths[f"blobs/{digest_of(config)}"] = config
    with Hostile(paths) as hostile:
        refused(store, hostile.host, f"config {digest_of(config)} is not JSON")


def symlink(name: str, target: str) -> tuple:
    info, _data = fixtures.entry(name, None, tarfile.SYMTYPE)
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    "entry",
    [
        fixtures.entry("../escape", b"x"),
        fixtures.entry("/abs/../../escape", b"x"),
        symlink("link", "../../../../etc"),
    ],
    ids=["dot-dot", "absolute", "symlink-then-through-it"],
)
def test_a_layer_with_hostile_entries_is_refused_while_it_streams(store, entry):  # noqa: F811
    entries = [entry]
    if entry[0].name == "link":  # a symlink out, then a file written through it
        entries.append(fixtures.entry("link/passwd", b"x"))
    with Hostile(image([fixtures.tar_of(entries)])) as hostile:
        refused(store, hostile.host, "blob sha256:")


def test_credentials_never_go_from_https_to_a_plain_http_token_server(
    store,  # noqa: F811
    registry_certificates,
    tmp_path,
):
    with Hostile({}) as token_server:
        realm = f"http://{token_server.host}/token"
        challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",service="evil"'}
        ping = lambda handler: answer(handler, 401, b"{}", "application/json", challenge)  # noqa: E731
        with Hostile({"/v2/": ping}, registry_certificates) as hostile:
            env = auth_file(tmp_path, hostile.host, "ann", "s3cret")
            env["SSL_CERT_FILE"] = registry_certificates.ca
            refused(
                store,
                hostile.host,
                f"its token server is plain HTTP ({token_server.host})",
                env=env,
            )
    assert token_server.seen == []


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://127.0.0.1/token"])
def test_a_token_server_that_is_no_http_address_is_refused(store, realm):  # noqa: F811
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    ping = lambda handler: answer(handler, 401, b"{}", "application/json", challenge)  # noqa: E731
    with Hostile({"/v2/": ping}) as hostile:
        refused(store, hostile.host, "its token server is no HTTP address")


def cut_then_lie(body: bytes):
    """The blob's first half then a broken connection; asked for the rest (Range), a 206
    whose Content-Range says the rest but whose bytes are the start again."""

    def send(handler) -> None:
        half = len(body) // 2
        if "Range" not in handler.headers:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[:half])
            handler.wfile.flush()
            handler.close_connection = True
            return
        start = int(handler.headers["Range"].removeprefix("bytes=").rstrip("-"))
        rest = len(body) - start
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        handler.send_header("Content-Length", str(rest))
        handler.end_headers()
        handler.wfile.write(body[:rest])

    return send


def test_a_resume_whose_bytes_lie_about_their_range_is_refused(store):  # noqa: F811
    paths = image([fixtures.tar_of([fixtures.entry("noise", os.urandom(65536))])])
    layer = manifest_of(paths)["layers"][0]["digest"]
    paths[f"blobs/{layer}"] = cut_then_lie(paths[f"blobs/{layer}"])
    with Hostile(paths) as hostile:
        refused(store, hostile.host, f"blob {layer}: its content has digest sha256:")
    assert sum(layer in path for path in hostile.seen) == 2  # the cut, the lie


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("127.0.0.1:1/../../etc/x", "invalid reference"),
        ("127.0.0.1:1/evil:a/b", "invalid reference"),
        ("127.0.0.1:1/evil:../x", "invalid reference"),
    ],
)
def test_names_that_would_leave_the_store_are_refused(store, name, message):  # noqa: F811
    failed = store("pull", name)
    assert failed.returncode == 125 and failed.stderr.count("\n") == 1, failed.stderr
    assert message in failed.stderr, failed.stderr
    assert contents(store.home) == {"images": [], "layers": [], "": []}


def redirect(to: str):
    return lambda handler: answer(handler, 307, b"", headers={"Location": to})


def test_redirect_loops_between_hosts_end(store):  # noqa: F811
    with Hostile({}) as first, Hostile({}) as second:
        first.paths["manifests/v1"] = redirect(f"http://{second.host}/v2/evil/manifests/v1")
        second.paths["manifests/v1"] = redirect(f"http://{first.host}/v2/evil/manifests/v1")
        refused(store, first.host, "over 10 redirects")
    assert len(first.seen) + len(second.seen) < 20


def endless(handler) -> None:
    """A body of no announced length that never ends (100 MB and more)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        for _ in range(100 << 4):
            handler.wfile.write(b" " * (64 << 10))
    except OSError:
        pass  # the client hung up, as it should


def test_a_token_answer_without_end_is_cut_at_its_bound(store):  # noqa: F811
    with Hostile({}) as token_server:
        challenge = {"WWW-Authenticate": f'Bearer realm="http://{token_server.host}/token"'}
        ping = lambda handler: answer(handler, 401, b"{}", "application/json", challenge)  # noqa: E731
        with Hostile({"/v2/": ping}) as hostile:
            token_server.server.RequestHandlerClass.do_GET = endless
            refused(store, hostile.host, "the token server's answer is over the 1 MiB bound")


def held(event: threading.Event, then=None):
    """An answer that signals ``event`` and waits (the test interrupts the pull meanwhile);
    ``then(handler)`` first, to send part of an answer."""

    def send(handler) -> None:
        if then:
            then(handler)
        event.set()
        time.sleep(20)

    return send


def half_of(body: bytes):
    def send(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()

    return send


@pytest.mark.parametrize("stage", ["ping", "manifest", "config", "layer", "second layer"])
def test_ctrl_c_at_every_stage_leaves_the_store_as_it_was(store, state_root, stage):  # noqa: F811
    noise = [fixtures.tar_of([fixtures.entry(n, os.urandom(1 << 20))]) for n in ("a", "b")]
    paths = image(noise)
    manifest = manifest_of(paths)
    first, second = (f"blobs/{d['digest']}" for d in manifest["layers"])
    reached = threading.Event()
    path, then = {
        "ping": ("/v2/", None),
        "manifest": ("manifests/v1", None),
        "config": (f"blobs/{manifest['config']['digest']}", None),
        "layer": (first, half_of(paths[first])),
        "second layer": (second, half_of(paths[second])),
    }[stage]
    paths[path] = held(reached, then)
    environment = dict(
        os.environ, MYCONTAINER_HOME=str(store.home), MYCONTAINER_STATE=str(state_root)
    )
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    with Hostile(paths) as hostile:
        pulling = subprocess.Popen(
            [sys.executable, "-m", "runtime", "pull", f"{hostile.host}/evil:v1"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert reached.wait(30), pulling.poll()
            time.sleep(0.3)  # (the other layer unpacked meanwhile, for the second)
            pulling.send_signal(signal.SIGINT)
            _, errors = pulling.communicate(timeout=30)
        finally:
            pulling.kill()
            pulling.wait()
    assert pulling.returncode == 130, errors
    assert errors.endswith("mycontainer: error: interrupted by SIGINT\n"), errors
    assert contents(store.home)["images"] == [] and contents(store.home)["layers"] == []


def test_a_realm_with_credentials_in_it_sends_and_prints_none(store):  # noqa: F811
    with Hostile({}) as token_server:
        realm = f"http://us3r:pw-in-realm@{token_server.host}/token"
        challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
        ping = lambda handler: answer(handler, 401, b"{}", "application/json", challenge)  # noqa: E731
        headers = []  # the Authorization of each request the token server gets
        with Hostile({"/v2/": ping}) as hostile:
            token_server.server.RequestHandlerClass.do_GET = lambda handler: (
                headers.append(handler.headers.get("Authorization")),
                answer(handler, 403, b"{}"),
            )
            failed = store("pull", f"{hostile.host}/evil:v1")
    assert failed.returncode == 125 and "token server answered 403" in failed.stderr
    assert "pw-in-realm" not in failed.stderr and headers == [None], (failed.stderr, headers)


def test_a_layer_listed_many_times_is_fetched_and_unpacked_once(store):  # noqa: F811
    """500 times the same layer (the most overlayfs stacks): one download, not 500, and one
    layer in the store; the image has its 500 layers."""
    paths = image([LAYER])
    config_digest = manifest_of(paths)["config"]["digest"]
    config = json.loads(paths[f"blobs/{config_digest}"])
    config["rootfs"]["diff_ids"] *= 500
    config_bytes = json.dumps(config).encode()
    paths[f"blobs/{digest_of(config_bytes)}"] = config_bytes
    paths = with_manifest(
        paths,
        lambda m: m.update(
            config=descriptor(config_bytes, fixtures.OCI_CONFIG), layers=m["layers"] * 500
        ),
    )
    layer = manifest_of(paths)["layers"][0]["digest"]
    with Hostile(paths) as hostile:
        pulled = store("pull", "-q", f"{hostile.host}/evil:v1", timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert sum(path.endswith(layer) for path in hostile.seen) == 1
    assert contents(store.home)["layers"] == [digest_of(LAYER).split(":")[1]]
    (record,) = contents(store.home)["images"]
    layers = json.loads((store.home / "images" / record).read_text())["layers"]
    assert layers == [digest_of(LAYER)] * 500


def test_more_layers_than_overlayfs_stacks_are_refused_before_any_is_fetched(store):  # noqa: F811
    paths = image([LAYER] * 501)
    with Hostile(paths) as hostile:
        refused(store, hostile.host, "501 layers, over the 500 that overlayfs can stack")
    assert not any("/blobs/" in path for path in hostile.seen), hostile.seen
