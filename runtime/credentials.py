"""Registry credentials in the files docker and podman keep them in, read and written alike.

Both tools store a JSON object whose ``auths`` maps a registry to ``{"auth": base64 of
"user:secret"}`` (docker's config.json(5), podman's containers-auth.json(5)), so a user who
ran ``docker login`` or ``podman login`` is logged in here too, and the other way round.

:func:`lookup` reads, first match wins, as podman (containers/image, pkg/docker/config):

1. ``$REGISTRY_AUTH_FILE`` if set, else ``${XDG_RUNTIME_DIR}/containers/auth.json``
   (``/run/containers/UID/auth.json`` without XDG_RUNTIME_DIR): what ``podman login`` wrote;
2. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``: what ``docker login`` wrote.

:func:`store` and :func:`erase` change one file: ``$REGISTRY_AUTH_FILE`` if set (as podman
login), else docker's config.json, which outlives a reboot (as docker login). The file is
replaced atomically (a new file renamed over it, rename(2)), mode 0600 as both tools make it,
every other key kept; a symbolic link is followed, as docker does.

Registries are matched by host[:port]: a key written as a URL (``https://ghcr.io/v1/``) counts
for its host. Docker Hub has several names, one account: ``docker.io``, ``index.docker.io``,
``registry-1.docker.io`` and docker's own key ``https://index.docker.io/v1/``, which is the key
written for it. A ``credsStore`` or ``credHelpers`` (docker's credential helpers, programs of
their own) holding a registry's secret is not supported: it is reported in one line. Secrets
are never printed, nor put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile

from runtime.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, DOCKER_HUB_API

DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # docker login's key for Docker Hub
# the names references use (runtime.reference), its API's host, and its web site's
DOCKER_HUB_NAMES = (*DOCKER_HUB_ALIASES, DOCKER_HUB_API, "registry.hub.docker.com")


class CredentialsError(Exception):
    """A credentials file cannot be used; the message says which and what to do."""


def normalize(registry: str) -> str:
    """``host[:port]`` of a registry name or auths key; Docker Hub's names are ``docker.io``."""
    name = registry.strip()
    for scheme in ("https://", "http://"):
        if name.startswith(scheme):
            name = name[len(scheme) :]
    name = name.split("/", 1)[0].lower()
    return DOCKER_HUB if name in DOCKER_HUB_NAMES else name


def read_paths() -> list[str]:
    """The files :func:`lookup` reads, in its order."""
    home = os.path.expanduser("~")
    if os.environ.get("REGISTRY_AUTH_FILE"):
        podman = os.environ["REGISTRY_AUTH_FILE"]
    elif os.environ.get("XDG_RUNTIME_DIR"):
        podman = os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json")
    else:
        podman = f"/run/containers/{os.getuid()}/auth.json"
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [podman, os.path.join(config_home, "containers", "auth.json"), docker_path()]


def docker_path() -> str:
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def write_path() -> str:
    """The file :func:`store` and :func:`erase` change."""
    return os.environ.get("REGISTRY_AUTH_FILE") or docker_path()


def lookup(registry: str) -> tuple[str, str] | None:
    """(username, secret) for ``registry`` (``host[:port]``) from the first file that has
    some, or None: then the registry is used anonymously."""
    found = _find(registry)
    return found[1] if found else None


def where(registry: str) -> str | None:
    """The file :func:`lookup` takes ``registry``'s credentials from, or None."""
    found = _find(registry)
    return found[0] if found else None


def _find(registry: str) -> tuple[str, tuple[str, str]] | None:
    wanted = normalize(registry)
    for path in read_paths():
        found = _entry(path, _load(path), wanted)
        if found:
            return path, found
    return None


def store(registry: str, username: str, secret: str) -> str:
    """Save ``registry``'s credentials in :func:`write_path`; returns that path."""
    if ":" in username:
        raise CredentialsError(f"a user name cannot contain ':' (got {username!r})")
    path = write_path()
    content = _load(path)
    wanted = normalize(registry)
    _refuse_helpers(path, content, wanted, storing=True)
    auths = content.setdefault("auths", {})
    for key in [key for key in auths if normalize(key) == wanted]:
        del auths[key]  # one entry per registry, whatever key an older tool wrote
    token = base64.b64encode(f"{username}:{secret}".encode()).decode()
    auths[DOCKER_HUB_KEY if wanted == DOCKER_HUB else wanted] = {"auth": token}
    _save(path, content)
    return path


def erase(registry: str) -> str | None:
    """Remove ``registry``'s credentials from :func:`write_path`; returns that path, or None
    if it had none."""
    path = write_path()
    content = _load(path)
    wanted = normalize(registry)
    keys = [key for key in content.get("auths", {}) if normalize(key) == wanted]
    if not keys:
        return None
    for key in keys:
        del content["auths"][key]
    _save(path, content)
    return path


def _load(path: str) -> dict:
    """The file's JSON object, or {} if there is no file."""
    try:
        with open(path, "rb") as file:
            text = file.read()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise CredentialsError(f"cannot read {path}: {error.strerror}") from None
    if not text.strip():
        return {}
    try:
        content = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CredentialsError(f"{path} is not valid JSON ({error}): fix or remove it") from None
    if not isinstance(content, dict) or not isinstance(content.get("auths", {}), dict):
        raise CredentialsError(
            f"{path} is not a credentials file (no 'auths' object): fix or remove it"
        )
    return content


def _entry(path: str, content: dict, wanted: str) -> tuple[str, str] | None:
    for key, value in content.get("auths", {}).items():
        if normalize(key) != wanted or not isinstance(value, dict):
            continue
        if value.get("identitytoken"):
            raise CredentialsError(
                f"{path} holds an identity token for {wanted}, which mycontainer does not use:"
                f" log in again with a password or an access token (mycontainer login {wanted})"
            )
        if value.get("auth"):
            return _decode(path, key, value["auth"])
    _refuse_helpers(path, content, wanted, storing=False)
    return None


def _decode(path: str, key: str, auth: str) -> tuple[str, str]:
    try:
        username, colon, secret = base64.b64decode(auth, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        colon = ""
    if not colon:
        raise CredentialsError(
            f"the credentials for {key} in {path} are not base64 of 'user:password':"
            f" log in again (mycontainer login {normalize(key)})"
        )
    return username, secret


def _refuse_helpers(path: str, content: dict, wanted: str, storing: bool) -> None:
    """A docker credential helper that holds (or would hold) ``wanted``'s secret: unsupported."""
    helpers = {normalize(key): name for key, name in (content.get("credHelpers") or {}).items()}
    helper = helpers.get(wanted)
    listed = any(normalize(key) == wanted for key in content.get("auths", {}))
    if not helper and content.get("credsStore") and (storing or listed):
        helper = content["credsStore"]
    if helper:
        raise CredentialsError(
            f"{path} keeps the credentials of {wanted} in docker's credential helper"
            f" 'docker-credential-{helper}', which mycontainer does not support: set"
            " REGISTRY_AUTH_FILE to a file of its own and log in again"
        )


def _save(path: str, content: dict) -> None:
    """Replace ``path`` (through a symbolic link) with ``content``, mode 0600, atomically."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".config-", dir=directory)  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(content, file, indent="\t")
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
