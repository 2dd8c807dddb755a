"""Image references as docker parses and normalises them (runtime.reference), and the store
names they become: what ``pull``, ``run``, ``images`` and ``rmi`` agree on."""

from __future__ import annotations

import pytest

from runtime import imagespec
from runtime.reference import ReferenceError, parse

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "full", "registry", "store_name"),
    [
        ("alpine", "docker.io/library/alpine:latest", "registry-1.docker.io", "alpine:latest"),
        ("alpine:3.20", "docker.io/library/alpine:3.20", "registry-1.docker.io", "alpine:3.20"),
        ("library/alpine", "docker.io/library/alpine:latest", "registry-1.docker.io",
         "alpine:latest"),
        ("docker.io/library/alpine", "docker.io/library/alpine:latest", "registry-1.docker.io",
         "alpine:latest"),
        ("index.docker.io/owner/app:1", "docker.io/owner/app:1", "registry-1.docker.io",
         "owner/app:1"),
        ("owner/app", "docker.io/owner/app:latest", "registry-1.docker.io", "owner/app:latest"),
        ("ghcr.io/owner/name:tag", "ghcr.io/owner/name:tag", "ghcr.io", "ghcr.io/owner/name:tag"),
        ("localhost:5000/name", "localhost:5000/name:latest", "localhost:5000",
         "localhost:5000/name:latest"),
        ("localhost/name", "localhost/name:latest", "localhost", "localhost/name:latest"),
        ("127.0.0.1:5000/a/b/c:v1.2_x-y", "127.0.0.1:5000/a/b/c:v1.2_x-y", "127.0.0.1:5000",
         "127.0.0.1:5000/a/b/c:v1.2_x-y"),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}", "registry-1.docker.io",
         f"alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine:3@{DIGEST}", "registry-1.docker.io",
         "alpine:3"),
        ("a__b-c/e---f.g", "docker.io/a__b-c/e---f.g:latest", "registry-1.docker.io",
         "a__b-c/e---f.g:latest"),
    ],
)  # fmt: skip
def test_references_normalise_as_docker(text, full, registry, store_name):
    reference = parse(text)
    assert str(reference) == full
    assert reference.registry == registry
    assert reference.store_name == store_name
    if "@" not in text:  # the store's own normalisation (the run path's, with no parser)
        assert imagespec.normalize(text) == store_name
    assert imagespec.name_problem(store_name) is None


def test_a_digest_wins_over_the_tag_when_asking_the_registry():
    assert parse(f"alpine:3@{DIGEST}").manifest_reference == DIGEST
    assert parse("alpine").manifest_reference == "latest"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Alpine", "lower case"),
        ("alpine:", "a tag is"),
        ("alpine:-x", "a tag is"),
        ("alpine:" + "t" * 129, "a tag is"),
        ("alpine@sha256:1234", "a digest is"),
        ("alpine@md5:" + "0" * 32, "a digest is"),
        ("a//b", "no repository name component"),
        ("a/-b", "no repository name component"),
        ("a/b.", "no repository name component"),
        ("a./b", "no registry host"),
        ("", "no repository name"),
        (":tag", "no repository name"),
        ("bad_host.:5000/x", "no registry host"),
        ("x/" * 130 + "y", "over 255"),
    ],
)
def test_bad_references_say_what_is_wrong(text, why):
    with pytest.raises(ReferenceError, match="invalid reference") as raised:
        parse(text)
    assert why in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("host", "named", "allowed"),
    [
        ("localhost:5000", "", True),
        ("127.0.0.1:5000", "", True),
        ("127.1.2.3", "", True),
        ("[::1]:5000", "", True),
        ("registry.example:5000", "", False),
        ("registry.example:5000", "other.example, registry.example:5000", True),
        ("registry.example:5000", "registry.example", True),
        ("registry.example", "registry.example:5000", False),
        ("128.0.0.1", "", False),
    ],
)
def test_which_registries_may_answer_in_plain_http(monkeypatch, host, named, allowed):
    from runtime import registry

    monkeypatch.setenv("MYCONTAINER_INSECURE_REGISTRIES", named)
    assert registry.allows_plain_http(host) is allowed


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux/amd64", ("linux", "amd64", None)),
        ("linux/x86_64", ("linux", "amd64", None)),
        ("Linux/ARM64/v8", ("linux", "arm64", "v8")),
        ("linux/arm/v7", ("linux", "arm", "v7")),
    ],
)
def test_platforms_are_named_as_docker(text, platform):
    from runtime import pull

    assert pull.parse_platform(text) == platform


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""])
def test_a_bad_platform_says_the_form(text):
    from runtime import pull

    with pytest.raises(ValueError, match=r"^--platform is os/arch\[/variant\]"):
        pull.parse_platform(text)
