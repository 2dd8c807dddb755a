"""The registry fixtures (tests/registry.py) are real software: each variant is checked here
with skopeo, as a client other than ours, and with the standard library's HTTP client."""

from __future__ import annotations

import base64
import copy
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
import registry as fixtures
from registry import PUSHER

pytest_plugins = ["registry"]


def inspect(registry, reference: str, *flags: str, creds=None) -> subprocess.CompletedProcess:
    """``skopeo inspect FLAGS docker://HOST/REFERENCE`` -> CompletedProcess."""
    command = ["skopeo", "inspect", *registry.skopeo_flags("", creds), *flags]
    return subprocess.run(
        [*command, f"docker://{registry.host}/{reference}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def get(url: str, *, token: str | None = None, context=None) -> tuple:
    """GET ``url`` -> (status, headers: case-insensitive), whatever the status."""
    request = urllib.request.Request(url, headers={"Accept": fixtures.OCI_MANIFEST})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_plain_registry_serves_what_skopeo_pushed(registry, test_layouts, tmp_path):
    digest = registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    raw = inspect(registry, "layered:v1", "--raw")
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    assert manifest["mediaType"] == fixtures.OCI_MANIFEST
    assert len(manifest["layers"]) == 3
    by_digest = inspect(registry, f"layered@{digest}", "--raw")
    assert by_digest.stdout == raw.stdout
    # What comes back is what went in, blob for blob.
    copy = subprocess.run(
        ["skopeo", "copy", "--quiet", *registry.skopeo_flags("src")]
        + [f"docker://{registry.host}/layered:v1", f"oci:{tmp_path / 'back'}:v1"],
        capture_output=True,
        text=True,
    )
    assert copy.returncode == 0, copy.stderr
    sent = set(os.listdir(os.path.join(test_layouts["layered"], "blobs", "sha256")))
    assert set(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == sent
    assert "listening on" in registry.log()


@pytest.mark.privileged
def test_layered_image_has_its_whiteouts(registry, test_layouts, mycontainer, tmp_path):
    """Pulled back by skopeo and loaded, the image shows what its whiteouts leave."""
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    subprocess.run(
        ["skopeo", "copy", "--quiet", *registry.skopeo_flags("src")]
        + [f"docker://{registry.host}/layered:v1", f"oci:{tmp_path / 'back'}:v1"],
        check=True,
    )
    run = mycontainer(
        "run", "--rm", "--net", "none", str(tmp_path / "back"), "ls", "/data", "/opaque"
    )
    assert run.stdout == "/data:\nkeep.txt\nnew.txt\n\n/opaque:\nfresh.txt\n", run.stderr


def test_multiarch_index_resolves_to_each_platform(registry, test_layouts):
    registry.push(f"oci:{test_layouts['multiarch']}:latest", "multi:v1")
    index = json.loads(inspect(registry, "multi:v1", "--raw").stdout)
    assert index["mediaType"] == fixtures.OCI_INDEX
    platforms = [
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    ]
    assert platforms == list(fixtures.PLATFORMS)
    # One base layer, shared by all: a client that has it for one platform has it for all.
    layers = set()
    for descriptor in index["manifests"]:
        manifest = inspect(registry, f"multi@{descriptor['digest']}", "--raw").stdout
        layers.add(json.loads(manifest)["layers"][0]["digest"])
    assert len(layers) == 1
    for architecture, variant in fixtures.PLATFORMS:
        flags = ["--override-arch", architecture, "--override-os", "linux"]
        flags += ["--override-variant", variant] if variant else []
        config = json.loads(inspect(registry, "multi:v1", "--config", *flags).stdout)
        assert (config["architecture"], config.get("variant")) == (architecture, variant)


def test_docker_media_types_with_fmt_v2s2(registry, test_layouts):
    """skopeo converts on the way in: docker's schema 2 manifest and manifest list, the
    media types Docker Hub serves most images with."""
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:docker", fmt="v2s2")
    manifest = json.loads(inspect(registry, "layered:docker", "--raw").stdout)
    assert manifest["mediaType"] == fixtures.DOCKER_MANIFEST
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    registry.push(f"oci:{test_layouts['multiarch']}:latest", "multi:docker", fmt="v2s2")
    index = json.loads(inspect(registry, "multi:docker", "--raw").stdout)
    assert index["mediaType"] == fixtures.DOCKER_LIST
    assert {m["mediaType"] for m in index["manifests"]} == {fixtures.DOCKER_MANIFEST}
    assert len(index["manifests"]) == len(fixtures.PLATFORMS)


def test_tls_registry_is_trusted_through_its_ca_only(registry_factory, test_layouts):
    registry = registry_factory(tls=True)
    assert registry.url.startswith("https://127.0.0.1:")
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    assert inspect(registry, "layered:v1").returncode == 0  # --cert-dir with the CA
    untrusted = subprocess.run(
        ["skopeo", "inspect", f"docker://{registry.host}/layered:v1"],
        capture_output=True,
        text=True,
    )
    assert untrusted.returncode != 0
    assert "certificate signed by unknown authority" in untrusted.stderr
    assert (
        get(f"{registry.url}/v2/", context=ssl.create_default_context(cafile=registry.ca))[0] == 200
    )
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"{registry.url}/v2/", context=ssl.create_default_context())


def test_basic_auth_registry_wants_the_right_password(registry_factory, test_layouts):
    registry = registry_factory(auth="basic", users={"alice": "wonderland"})
    with open(os.path.join(registry.directory, "htpasswd")) as file:
        assert all(line.split(":", 1)[1].startswith("$2y$") for line in file)  # bcrypt
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    assert inspect(registry, "layered:v1", creds=("alice", "wonderland")).returncode == 0
    anonymous = inspect(registry, "layered:v1")
    assert "authentication required" in anonymous.stderr
    assert inspect(registry, "layered:v1", creds=("alice", "rabbit")).returncode != 0
    status, headers = get(f"{registry.url}/v2/")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="mycontainer-test"')


def test_token_registry_enforces_the_scopes_it_granted(registry_factory, test_layouts):
    grants = {
        None: {"public/*": {"pull"}},  # anonymous: public repositories only, as Docker Hub
        "alice": {"private/*": {"pull"}},
        PUSHER[0]: {"*": {"pull", "push"}},
    }
    registry = registry_factory(auth="token", users={"alice": "wonderland"}, grants=grants)
    for name in ("public/layered:v1", "private/layered:v1"):
        registry.push(f"oci:{test_layouts['layered']}:latest", name)

    status, headers = get(f"{registry.url}/v2/")
    realm = registry.token_server.realm
    expected = f'Bearer realm="{realm}",service="{fixtures.SERVICE}"'
    assert (status, headers["WWW-Authenticate"]) == (401, expected)

    assert inspect(registry, "public/layered:v1").returncode == 0
    denied = inspect(registry, "private/layered:v1")
    assert "requested access to the resource is denied" in denied.stderr
    assert inspect(registry, "private/layered:v1", creds=("alice", "wonderland")).returncode == 0
    assert inspect(registry, "private/layered:v1", creds=("alice", "rabbit")).returncode != 0
    # alice may pull, not push.
    push = subprocess.run(
        ["skopeo", "copy", *registry.skopeo_flags("dest", ("alice", "wonderland"))]
        + [f"oci:{test_layouts['layered']}:latest", f"docker://{registry.host}/private/other:v1"],
        capture_output=True,
        text=True,
    )
    assert push.returncode != 0 and "denied" in push.stderr
    asked = [r for r in registry.token_server.requests if r["account"] is None]
    assert any(
        "repository:private/layered:pull" in r["scopes"] and r["granted"] == [] for r in asked
    )

    # Credentials that are no user's get no token at all, not an anonymous one.
    for header in ("Basic !!!", "Basic //79", "Bearer x", "Basic " + fixtures.b64url(b"alice:x")):
        request = urllib.request.Request(f"{realm}?service={fixtures.SERVICE}")
        request.add_header("Authorization", header)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(request, timeout=10)

    # A token for public/layered opens that repository and no other; a forged one opens nothing.
    url = f"{realm}?service={fixtures.SERVICE}&scope=repository:public/layered:pull"
    with urllib.request.urlopen(url, timeout=10) as response:
        token = json.load(response)["token"]
    manifest = f"{registry.url}/v2/public/layered/manifests/v1"
    assert get(manifest, token=token)[0] == 200
    assert get(f"{registry.url}/v2/private/layered/manifests/v1", token=token)[0] == 401
    header, claims, signature = token.split(".")
    widened = json.loads(base64.urlsafe_b64decode(claims + "=="))
    widened["access"][0]["name"] = "private/layered"
    forged = base64.urlsafe_b64encode(json.dumps(widened).encode()).rstrip(b"=").decode()
    assert (
        get(
            f"{registry.url}/v2/private/layered/manifests/v1",
            token=f"{header}.{forged}.{signature}",
        )[0]
        == 401
    )


def test_token_registry_over_tls(registry_factory, test_layouts):
    """The Docker Hub flow as clients meet it: the registry and the realm both HTTPS."""
    registry = registry_factory(auth="token", tls=True)
    assert registry.token_server.realm.startswith("https://127.0.0.1:")
    registry.push(f"oci:{test_layouts['multiarch']}:latest", "library/multi:v1")
    assert inspect(registry, "library/multi:v1").returncode == 0


def test_serve_stops_the_registry_and_removes_its_files_on_failure(registry_certificates, tmp_path):
    directory = str(tmp_path / "registry")
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        fixtures.serve(directory, registry_certificates, auth="token") as registry,
    ):
        process, token_url = registry.process, registry.token_server.realm
        raise RuntimeError("the test failed")
    assert process.poll() is not None
    assert not os.path.exists(directory)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(token_url, timeout=5)


def test_a_registry_that_cannot_start_says_why(registry_certificates, tmp_path):
    broken = copy.copy(registry_certificates)
    broken.server_key = str(tmp_path / "missing.key")
    failed = "(?s)docker-registry exited with 1; its log:.*missing.key"
    with (
        pytest.raises(RuntimeError, match=failed),
        fixtures.serve(str(tmp_path / "r"), broken, tls=True),
    ):
        pass
    assert not os.path.exists(tmp_path / "r")
