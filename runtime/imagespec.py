"""What an image's metadata must be: its name, its digests, its config's fields.

The rules of docker's reference grammar (names and tags), of the OCI image spec
(https://github.com/opencontainers/image-spec: descriptor.md's digests, config.md's fields,
image-index.md's media types and platforms) that both the store (runtime.image) and the
readers of image files (runtime.imagesource) check, and ImageError, which both raise.
"""

from __future__ import annotations

import json

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}
# Image names, as docker's reference grammar (distribution/reference) allows them, except
# that upper case is kept (a file's name may give an image its name).
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
SEPARATORS = "._-"
MAX_TAG = 128
MAX_RECORD_NAME = 255 - len(".json")  # NAME_MAX, with '/' written as %2F


class ImageError(Exception):
    """IMAGE names nothing runnable, or could not be imported; the message says what to do.

    ``exit_code`` is what ``mycontainer`` exits with: 125, or docker's 127 for a command
    that cannot be found.
    """

    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code


def normalize(name: str) -> str:
    """The name as the store keeps it: ``busybox`` -> ``busybox:latest`` (no tag means
    latest), ``docker.io/library/busybox:1`` and ``library/busybox:1`` -> ``busybox:1``
    (docker's familiar form, runtime.reference); ``NAME@DIGEST`` keeps no tag."""
    for registry in ("index.docker.io/", "docker.io/"):
        name = name.removeprefix(registry)
    if name.startswith("library/") and name.count("/") == 1:
        name = name.removeprefix("library/")
    if "@" in name or ":" in name.rsplit("/", 1)[-1]:
        return name
    return f"{name}:latest"


def name_problem(name: str) -> str | None:
    """What makes ``name`` (``REPOSITORY:TAG`` or ``REPOSITORY@DIGEST``, normalized) no
    name for the store, or None.

    docker's grammar: REPOSITORY is components of letters, digits and separators (``._-``,
    neither first nor last) joined by ``/``, the first of several may be a registry's
    ``host:port``; TAG is at most 128 of the same characters, not starting with ``.`` or
    ``-``. And the record's file name must fit NAME_MAX (255 bytes).
    """
    if "@" in name:  # REPOSITORY@DIGEST: an image pulled by digest alone
        repository, _, digest = name.partition("@")
        if not is_digest(digest):
            return "a digest is sha256:<64 lower-case hex digits>"
    else:
        repository, _, tag = name.rpartition(":")
        problem = tag_problem(tag)
        if problem:
            return problem
    components = repository.split("/")
    for position, component in enumerate(components):
        host, colon, port = component.partition(":")
        if colon and not (
            position == 0 < len(components) - 1 and port.isascii() and port.isdigit()
        ):
            return f"':' only goes before a tag or a registry's port (in {component!r})"
        if not host or host[0] in SEPARATORS or host[-1] in SEPARATORS:
            return "a name component is empty, or starts or ends with '.', '_' or '-'"
        if not NAME_CHARACTERS.issuperset(host):
            return "names have only letters, digits, '.', '_', '-', '/' and one ':TAG'"
    if len(escaped_name(name)) > MAX_RECORD_NAME:
        return f"too long ({len(name)} characters; at most {MAX_RECORD_NAME}, a '/' counting 3)"
    return None


def tag_problem(tag: str) -> str | None:
    """What makes ``tag`` no tag (see :func:`name_problem`), or None."""
    if not 0 < len(tag) <= MAX_TAG or not NAME_CHARACTERS.issuperset(tag) or tag[0] in ".-":
        return f"a tag is 1 to {MAX_TAG} letters, digits, '.', '_' or '-', not first '.' or '-'"
    return None


def check_name(name: str) -> str:
    """``name``, or ImageError saying why the store cannot keep it (see :func:`name_problem`)."""
    problem = name_problem(name)
    if problem:
        shown = repr(name) if len(name) <= 80 else f"{name[:60]!r}..."
        raise ImageError(f"invalid image name {shown}: {problem}")
    return name


def config_problem(config) -> tuple[str, str, object] | None:
    """The first field of an image config's ``config`` object (image-spec config.md) with
    the wrong shape, as (field, the shape it must have, its value); None if all are fine.
    Only the fields docker reads are looked at; null means unset, as in docker's configs."""
    if not isinstance(config, dict):
        return "", "an object", config
    for field, (valid, shape) in CONFIG_FIELDS.items():
        value = config.get(field)
        if value is not None and not valid(value):
            return field, shape, value
    return None


def excerpt(value) -> str:
    """A value of an image's metadata as an error message shows it: JSON, cut short."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_text(value) -> bool:
    return isinstance(value, str) and "\0" not in value  # no NUL: execve(2) takes C strings


def _is_text_list(value) -> bool:
    return isinstance(value, list) and all(map(_is_text, value))


def _is_environment(value) -> bool:
    return _is_text_list(value) and all("=" in entry[1:] for entry in value)


def _is_absolute_path(value) -> bool:
    return _is_text(value) and (value == "" or value.startswith("/"))


def _is_port(value) -> bool:
    """``80``, ``80/tcp``, ``53/udp``, ``9/sctp``: an exposed port, as docker writes it."""
    port, _, protocol = value.partition("/")
    number = port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536
    return number and protocol in ("", "tcp", "udp", "sctp")


def _is_set_of(valid):
    """An object whose keys are ``valid`` and whose values are ``{}`` (docker's sets)."""
    return lambda value: (
        isinstance(value, dict)
        and all(valid(key) and isinstance(item, dict) for key, item in value.items())
    )


def is_text_map(value) -> bool:
    return isinstance(value, dict) and all(map(_is_text, value.values()))


CONFIG_FIELDS = {
    "User": (_is_text, "a string, USER[:GROUP]"),
    "WorkingDir": (_is_absolute_path, "an absolute path"),
    "Env": (_is_environment, "a list of KEY=VALUE strings"),
    "Entrypoint": (_is_text_list, "a list of strings"),
    "Cmd": (_is_text_list, "a list of strings"),
    "ExposedPorts": (_is_set_of(_is_port), 'an object of "PORT/PROTOCOL": {} entries'),
    "Volumes": (_is_set_of(_is_absolute_path), 'an object of "/PATH": {} entries'),
    "Labels": (is_text_map, "an object of strings"),
    "StopSignal": (_is_text, "a string"),
}


def is_digest(value) -> bool:
    """A digest mycontainer can check: ``sha256:`` and 64 lower-case hex digits."""
    try:
        return isinstance(value, str) and bool(digest_hex(value))
    except ImageError:
        return False


def digest_hex(digest: str) -> str:
    """The 64 hex digits of a ``sha256:`` digest; ImageError for any other."""
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ImageError(f"unsupported or malformed digest: {digest}")
    return value


def escaped_name(name: str) -> str:
    """``name`` as the file name of its record: '/' and other unsafe characters %-escaped."""
    return "".join(c if c.isalnum() or c in "-_.:" else f"%{ord(c):02X}" for c in name)
