"""``mycontainer pull`` and ``run --pull`` against a real registry (tests/registry.py: Debian's
docker-registry, in the session's network namespace), never a mock of one.

Each test pulls into a store of its own (an empty MYCONTAINER_HOME), so what a pull leaves,
or must not leave, is exactly what the test sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    manifest = json.loads(fixtures.skopeo("inspect", "--raw", "--tls-verify=false",
                                          f"docker://{name}").stdout)  # fmt: skip
    layers = [layer["digest"] for layer in manifest["layers"]]
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
    assert missing.stderr.startswith(f"Unable to find image '{name}' locally\n")
    config_requests = len(layered.log().splitlines())
    again = store(*run, name, "true")  # missing: stored, so the registry hears nothing
    assert again.returncode == 0 and again.stderr == ""
    assert len(layered.log().splitlines()) == config_requests
    always = store(*run, "--pull", "always", name, "true")
    assert always.returncode == 0 and "up to date" in always.stderr, always.stderr
    bad = store(*run, "--pull", "sometimes", name, "true")
    assert bad.returncode == 125 and "--pull is missing, always or never" in bad.stderr


def test_a_blob_whose_digest_does_not_match_leaves_the_store_as_it_was(store, layered):
    name = f"{layered.host}/layered:v1"
    manifest = json.loads(fixtures.skopeo("inspect", "--raw", "--tls-verify=false",
                                          f"docker://{name}").stdout)  # fmt: skip
    top = manifest["layers"][-1]["digest"]
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
    assert contents(store.home) == before | {"layers": []} or contents(store.home) == before


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
