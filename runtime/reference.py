"""Image references as docker writes them: ``alpine``, ``alpine:3.20``, ``library/alpine``,
``docker.io/library/alpine``, ``ghcr.io/owner/name:tag``, ``localhost:5000/name``,
``name@sha256:<hex>``; parsed and normalised as docker's distribution/reference does.

The grammar (https://github.com/distribution/reference, reference.go)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ], host being DNS labels joined by "."
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}

The first component is a registry only if it looks like one: it holds a ``.`` or a ``:``,
or is ``localhost`` (``library/alpine`` is a path on Docker Hub). Docker Hub's names are
normalised: no registry means ``docker.io``, whose API is at ``registry-1.docker.io``, and a
one-component path there is an official image, under ``library/``. A name is at most 255
characters. Docker shows Hub's images by their *familiar* name (``alpine``, ``owner/app``),
and so does the store.
"""

from __future__ import annotations

import re

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io")
MAX_NAME = 255
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]+)?\Z"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class ReferenceError(ValueError):
    """Not an image reference; the message says what is wrong with it."""


class Reference:
    """A normalised reference: ``domain`` (``docker.io`` for Docker Hub), ``path``
    (``library/alpine``), ``tag`` (``latest`` when neither tag nor digest is given) and
    ``digest`` (or None)."""

    def __init__(self, domain: str, path: str, tag: str | None, digest: str | None):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    @property
    def registry(self) -> str:
        """The host[:port] whose API serves the repository."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def repository(self) -> str:
        """The familiar name, as docker shows it: ``alpine``, ``owner/app``, ``ghcr.io/o/n``."""
        if self.domain == DOCKER_HUB:
            return self.path.removeprefix("library/")
        return f"{self.domain}/{self.path}"

    @property
    def store_name(self) -> str:
        """The store's name for the image: ``REPOSITORY:TAG``, or ``REPOSITORY@DIGEST``
        for a reference by digest alone."""
        if self.tag:
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}@{self.digest}"

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry for: the digest if there is one (it wins over the tag,
        as docker's), else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        """The full, normalised reference: ``docker.io/library/alpine:latest``."""
        text = f"{self.domain}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """``text`` as a normalised Reference; ReferenceError saying what is wrong with it."""
    shown = repr(text) if len(text) <= 80 else f"{text[:60]!r}..."
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise ReferenceError(f"invalid reference {shown}: a digest is sha256:<64 hex digits>")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):  # a ':' after the last '/' starts the tag, else a port
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError(
                f"invalid reference {shown}: a tag is 1 to 128 letters, digits, '_', '.' or "
                "'-', not first '.' or '-'"
            )
    if not name:
        raise ReferenceError(f"invalid reference {shown}: no repository name")
    if len(name) > MAX_NAME:
        raise ReferenceError(f"invalid reference {shown}: the name is over {MAX_NAME} characters")
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN.match(domain):
            raise ReferenceError(f"invalid reference {shown}: {domain!r} is no registry host")
    else:
        domain, path = DOCKER_HUB, name
    if domain in DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            lower = " (repository names are lower case)" if component.lower() != component else ""
            raise ReferenceError(
                f"invalid reference {shown}: {component!r} is no repository name component: "
                f"lower-case letters and digits, separated by '.', '_', '__' or '-'{lower}"
            )
    if tag is None and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest or None)
