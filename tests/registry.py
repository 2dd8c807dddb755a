"""A real registry for the tests: Debian's ``docker-registry`` (distribution 2.8), never a mock.

:func:`serve` starts one on 127.0.0.1 (a port the kernel picks) with a configuration and a
storage directory of its own, in one of four variants:

* plain HTTP;
* ``tls=True``: HTTPS with a server certificate for ``127.0.0.1`` and ``localhost`` signed by a
  CA made for the session (:class:`Certificates`, with the ``openssl`` CLI); clients trust it
  through ``Registry.ca`` or ``Registry.cert_dir`` (skopeo's ``--cert-dir``: a ``ca.crt``);
* ``auth="basic"``: HTTP basic auth against an htpasswd file of bcrypt hashes (``htpasswd -B``
  from apache2-utils, as distribution's own docs make them);
* ``auth="token"``: the bearer-token flow Docker Hub and ghcr use (distribution's
  docs/spec/auth/token.md): the registry answers 401 with ``WWW-Authenticate: Bearer
  realm=…,service=…,scope=…``, the client asks :class:`TokenServer` (stdlib http.server, in a
  thread) for a token, and the registry checks the token's RS256 signature against the
  certificate in its ``rootcertbundle`` and its ``access`` claim against the request: a token
  for ``repository:x:pull`` pulls x and nothing else. Who gets what is ``grants``.

Images go in with skopeo (:meth:`Registry.push`), from OCI layouts built here with the
standard library: :func:`layered_layout` (the busybox rootfs and two layers of whiteouts, as
tests/test_image.py's umoci image) and :func:`multiarch_layout` (an index of linux/amd64,
linux/arm64/v8 and linux/arm/v7, each variant saying which it is in /etc/platform). The
Debian image of bench/image_import.py (debootstrap, cached) is :func:`debian_layout`.

The processes run in the test session's own network namespace (tests/conftest.py), die with
the process that started them (PR_SET_PDEATHSIG) and are stopped, and their files removed,
when the ``with`` block or the fixture ends, also on failure. The bench (bench/pull.py) uses
:func:`serve` too; like the bench, this needs only the standard library and the commands
``docker-registry``, ``openssl``, ``htpasswd`` and ``skopeo`` (``setup.sh`` installs them),
besides pytest for the fixtures at the end. A test module uses the fixtures with
``pytest_plugins = ["registry"]``; it may import this module too, which pytest then cannot
rewrite as a plugin (it has no assert to rewrite): PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fnmatch
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = "mycontainer-test-registry"  # the token's audience, as Docker Hub's registry.docker.io
ISSUER = "mycontainer-test-token-server"
PUSHER = ("pusher", "pusher-secret")  # the account Registry.push uses under auth
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"  # Registry.push fmt="v2s2"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
PLATFORMS = (("amd64", None), ("arm64", "v8"), ("arm", "v7"))  # multiarch_layout's variants
COMMANDS = {
    "docker-registry": "apt-get install docker-registry",
    "openssl": "apt-get install openssl",
    "htpasswd": "apt-get install apache2-utils",
    "skopeo": "apt-get install skopeo",
}


def missing_commands() -> str | None:
    """What to install for these fixtures, or None if all is there."""
    missing = [install for command, install in COMMANDS.items() if not shutil.which(command)]
    return "; ".join(missing) or None


# --- certificates ----------------------------------------------------------------------------


@dataclass
class Certificates:
    """A CA, a server certificate it signed (for 127.0.0.1 and localhost), and the token
    server's self-signed signing certificate, made with the openssl CLI in ``directory``."""

    directory: str

    def __post_init__(self) -> None:
        d = self.directory
        self.ca, self.ca_key = f"{d}/ca.crt", f"{d}/ca.key"
        self.server, self.server_key = f"{d}/server.crt", f"{d}/server.key"
        self.token, self.token_key = f"{d}/token.crt", f"{d}/token.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl("req", "-x509", *ec, "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                "-subj", "/CN=mycontainer test CA")  # fmt: skip
        openssl("req", *ec, "-keyout", self.server_key, "-out", f"{d}/server.csr",
                "-subj", "/CN=127.0.0.1")  # fmt: skip
        with open(f"{d}/server.ext", "w") as file:
            file.write(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
            )
        openssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", self.ca, "-CAkey",
                self.ca_key, "-CAcreateserial", "-days", "2", "-extfile", f"{d}/server.ext",
                "-out", self.server)  # fmt: skip
        # distribution verifies a token's x5c chain against rootcertbundle and wants the
        # leaf to allow digitalSignature (registry/auth/token/token.go).
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.token_key,
                "-out", self.token, "-days", "2", "-subj", "/CN=mycontainer test tokens",
                "-addext", "keyUsage=critical,digitalSignature")  # fmt: skip
        self.cert_dir = f"{d}/certs.d"  # skopeo's --cert-dir: *.crt are CAs
        os.mkdir(self.cert_dir)
        shutil.copy(self.ca, f"{self.cert_dir}/ca.crt")

    def token_x5c(self) -> str:
        """The signing certificate, base64 DER, for the JWT header's x5c."""
        der = openssl("x509", "-in", self.token, "-outform", "DER")
        return base64.b64encode(der).decode()


def openssl(*args: str, data: bytes | None = None) -> bytes:
    completed = subprocess.run(["openssl", *args], input=data, capture_output=True)
    if completed.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {completed.stderr.decode().strip()}")
    return completed.stdout


# --- the token server ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Docker's token server (docs/spec/auth/token.md), on 127.0.0.1 in a thread.

    ``GET /token?service=S&scope=repository:NAME:ACTIONS...`` answers a JWT granting the
    requested actions that ``grants`` allows the account: ``grants[None]`` for anonymous
    requests, ``grants[user]`` for a request with that user's basic credentials (``users``);
    wrong credentials get 401. ``grants`` maps an account to {repository pattern (fnmatch):
    set of actions}. Each request is kept in ``requests`` (account, scopes asked, granted).
    """

    def __init__(self, certificates: Certificates, users: dict, grants: dict, tls: bool):
        self.certificates, self.users, self.grants = certificates, users, grants
        self.requests: list[dict] = []
        self.x5c = certificates.token_x5c()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, body = server.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass  # requests are kept in server.requests

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificates.server, certificates.server_key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.realm = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        account = None
        if authorization:
            kind, _, credentials = authorization.partition(" ")
            try:
                user, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:  # not base64, or not text: as wrong credentials
                user = password = None
            if kind.lower() != "basic" or user not in self.users or self.users[user] != password:
                self.requests.append({"account": user, "scopes": query.get("scope", [])})
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            account = user
        access = []
        for scope in query.get("scope", []):
            for one in scope.split(" "):  # docker joins scopes with spaces, too
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                allowed = set()
                for pattern, granted in self.grants.get(account, {}).items():
                    if fnmatch.fnmatchcase(name, pattern):
                        allowed |= set(granted)
                wanted = [a for a in actions.split(",") if a in allowed]
                if kind == "repository" and wanted:
                    access.append({"type": kind, "name": name, "actions": wanted})
        self.requests.append(
            {"account": account, "scopes": query.get("scope", []), "granted": access}
        )
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": account or "", "aud": query.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}  # fmt: skip
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = openssl("dgst", "-sha256", "-sign", self.certificates.token_key,
                            data=signed.encode())  # fmt: skip
        token = f"{signed}.{b64url(signature)}"
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return 200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


# --- the registry ----------------------------------------------------------------------------


@dataclass
class Registry:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT``, ``url`` its base URL."""

    host: str
    tls: bool
    auth: str | None
    users: dict
    directory: str
    certificates: Certificates
    process: subprocess.Popen
    token_server: TokenServer | None = None
    pushed: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca(self) -> str | None:
        """The CA file a client must trust (None for plain HTTP)."""
        return self.certificates.ca if self.tls else None

    @property
    def cert_dir(self) -> str | None:
        return self.certificates.cert_dir if self.tls else None

    @property
    def storage(self) -> str:
        return os.path.join(self.directory, "storage")

    def log(self) -> str:
        """What the registry logged (its access log included)."""
        with open(os.path.join(self.directory, "registry.log"), errors="replace") as file:
            return file.read()

    def skopeo_flags(self, side: str = "", creds: tuple[str, str] | None = None) -> list[str]:
        """skopeo's options to reach this registry: ``side`` is "src" or "dest" for copy."""
        prefix = f"--{side}-" if side else "--"
        flags = [f"{prefix}cert-dir", self.cert_dir] if self.tls else [f"{prefix}tls-verify=false"]
        if creds:
            flags += [f"{prefix}creds", f"{creds[0]}:{creds[1]}"]
        return flags

    def push(self, source: str, name: str, *, all_platforms: bool = True, fmt: str = "") -> str:
        """``skopeo copy SOURCE docker://HOST/NAME`` (as PUSHER under auth); the digest of
        the manifest (or index) pushed. ``fmt`` "v2s2" converts to docker's media types:
        schema 2 manifests, and an index to a manifest list."""
        creds = PUSHER if self.auth else None
        with tempfile.NamedTemporaryFile(dir=self.directory) as digest_file:
            command = ["copy", "--quiet", "--digestfile", digest_file.name]
            command += ["--multi-arch", "all" if all_platforms else "system"]
            command += ["--format", fmt] if fmt else []
            command += self.skopeo_flags("dest", creds)
            skopeo(*command, source, f"docker://{self.host}/{name}")
            digest = digest_file.read().decode().strip()
        self.pushed[name] = digest
        return digest


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    completed = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies (prctl(2)),
    so that a killed test session leaves no registry behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def default_grants(users: dict) -> dict:
    """Anonymous pulls of everything, each user (PUSHER too) pulls and pushes everything."""
    grants = {user: {"*": {"pull", "push"}} for user in users}
    grants[None] = {"*": {"pull"}}
    return grants


@contextlib.contextmanager
def serve(
    directory: str,
    certificates: Certificates,
    *,
    tls: bool = False,
    auth: str | None = None,
    users: dict | None = None,
    grants: dict | None = None,
) -> Iterator[Registry]:
    """A docker-registry serving on 127.0.0.1 from ``directory`` (made, then removed).

    ``auth``: None, "basic" or "token"; ``users`` {name: password} (PUSHER is added);
    ``grants``: the token server's policy (see :class:`TokenServer`; default_grants).
    """
    if auth not in (None, "basic", "token"):
        raise ValueError(f"auth must be None, 'basic' or 'token', not {auth!r}")
    users = {**(users or {}), PUSHER[0]: PUSHER[1]}
    os.makedirs(directory)
    token_server = process = None
    try:
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": os.path.join(directory, "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": "127.0.0.1:0", "secret": secrets.token_hex(16)},
        }
        if tls:
            config["http"]["tls"] = {
                "certificate": certificates.server,
                "key": certificates.server_key,
            }
        if auth == "basic":
            lines = []
            for user, password in users.items():
                hashed = subprocess.run(
                    ["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True
                ).stdout.strip()
                lines.append(hashed)
            with open(os.path.join(directory, "htpasswd"), "w") as file:
                file.write("\n".join(lines) + "\n")
            config["auth"] = {
                "htpasswd": {"realm": "mycontainer-test", "path": f"{directory}/htpasswd"}
            }
        elif auth == "token":
            policy = default_grants(users) if grants is None else grants
            token_server = TokenServer(certificates, users, policy, tls)
            config["auth"] = {
                "token": {
                    "realm": token_server.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": certificates.token,
                }
            }
        # JSON is YAML: the registry reads this as its config.yml.
        config_path = os.path.join(directory, "config.yml")
        with open(config_path, "w") as file:
            json.dump(config, file, indent=2)
        with open(os.path.join(directory, "registry.log"), "w") as log:
            process = subprocess.Popen(
                ["docker-registry", "serve", config_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        host = wait_listening(directory, process)
        registry = Registry(host, tls, auth, users, directory, certificates, process, token_server)
        yield registry
    finally:
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if token_server:
            token_server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def wait_listening(directory: str, process: subprocess.Popen, timeout: float = 30) -> str:
    """The ``127.0.0.1:PORT`` the registry logs it listens on (it binds port 0)."""
    log = os.path.join(directory, "registry.log")
    deadline = time.monotonic() + timeout
    while True:
        with open(log, errors="replace") as file:
            text = file.read()
        if found := re.search(r'msg="listening on (127\.0\.0\.1:\d+)', text):
            return found.group(1)
        if process.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {process.returncode}" if process.poll() is not None else "is slow"
            raise RuntimeError(f"docker-registry {state}; its log:\n{text[-3000:]}")
        time.sleep(0.02)


# --- images ----------------------------------------------------------------------------------


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]], rootfs: str | None = None) -> bytes:
    """An uncompressed tar: ``rootfs`` (a directory) first if given, then ``entries``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        if rootfs:
            for name in sorted(os.listdir(rootfs)):
                archive.add(os.path.join(rootfs, name), arcname=name)
        for info, data in entries:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def entry(name: str, data: bytes | None = b"", kind: bytes = tarfile.REGTYPE) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, 0
    return info, data or b""


class LayoutWriter:
    """Writes an OCI image layout (image-layout.md): blobs, then index.json naming one tag."""

    def __init__(self, layout: str):
        self.layout = layout
        self.blobs = os.path.join(layout, "blobs", "sha256")
        os.makedirs(self.blobs)

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, digest), "wb") as file:
            file.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}

    def image(self, layers: list[bytes], architecture: str, variant: str | None = None) -> dict:
        """An image manifest of gzip'd ``layers`` (uncompressed tars); its descriptor."""
        platform = {"architecture": architecture, "os": "linux"}
        platform |= {"variant": variant} if variant else {}
        config = {
            **platform,
            "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers],
            },
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(json.dumps(config).encode(), OCI_CONFIG),
            "layers": [self.blob(gzip.compress(layer, mtime=0), OCI_LAYER) for layer in layers],
        }
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST, platform=platform)

    def finish(self, descriptor: dict, tag: str = "latest") -> str:
        descriptor = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
        with open(os.path.join(self.layout, "index.json"), "w") as file:
            json.dump({"schemaVersion": 2, "manifests": [descriptor]}, file)
        with open(os.path.join(self.layout, "oci-layout"), "w") as file:
            json.dump({"imageLayoutVersion": "1.0.0"}, file)
        return self.layout


def host_architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def layered_layout(layout: str, busybox_rootfs: str) -> str:
    """The busybox rootfs and two layers of whiteouts, as an OCI layout tagged ``latest``.

    Run, it shows ``/data`` with keep.txt and new.txt (gone.txt and gonedir/ whited out by
    layer 2) and ``/opaque`` with fresh.txt only (old.txt hidden by layer 3's opaque marker,
    which comes after the layer's own entry, as tests/test_image.py's layer 3).
    """
    writer = LayoutWriter(layout)
    base = tar_of(
        [entry("data", None, tarfile.DIRTYPE), entry("data/keep.txt", b"keep\n"),
         entry("data/gone.txt", b"gone\n"), entry("data/gonedir", None, tarfile.DIRTYPE),
         entry("data/gonedir/x", b"x\n"), entry("opaque", None, tarfile.DIRTYPE),
         entry("opaque/old.txt", b"old\n")],
        busybox_rootfs,
    )  # fmt: skip
    whiteouts = tar_of(
        [entry("data", None, tarfile.DIRTYPE), entry("data/.wh.gone.txt"),
         entry("data/.wh.gonedir"), entry("data/new.txt", b"new\n")]
    )  # fmt: skip
    opaque = tar_of(
        [entry("opaque", None, tarfile.DIRTYPE), entry("opaque/fresh.txt", b"fresh\n"),
         entry("opaque/.wh..wh..opq")]
    )  # fmt: skip
    return writer.finish(writer.image([base, whiteouts, opaque], host_architecture()))


def multiarch_layout(layout: str, busybox_rootfs: str) -> str:
    """An OCI index of PLATFORMS (tagged ``latest``): each variant is the busybox rootfs (one
    layer, the same blob in all) and a layer with /etc/platform saying ``linux/ARCH[/VARIANT]``.
    Every variant runs here (the busybox is the host's): /etc/platform tells which was chosen.
    """
    writer = LayoutWriter(layout)
    base = tar_of([], busybox_rootfs)
    manifests = []
    for architecture, variant in PLATFORMS:
        name = "/".join(filter(None, ("linux", architecture, variant)))
        marker = tar_of(
            [entry("etc", None, tarfile.DIRTYPE), entry("etc/platform", f"{name}\n".encode())]
        )
        manifests.append(writer.image([base, marker], architecture, variant))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return writer.finish(writer.blob(json.dumps(index).encode(), OCI_INDEX))


def debian_layout() -> str:
    """bench/image_import.py's Debian minbase image (3 layers, ~120 MB unpacked): built once
    with debootstrap (minutes, from the Debian mirror), then cached outside the repository."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import image_import
    finally:
        sys.path.remove(os.path.join(REPO, "bench"))
    return image_import.debian_layout()


# --- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry_certificates(tmp_path_factory) -> Certificates:
    """The session's CA, server and token-signing certificates."""
    if reason := missing_commands():
        pytest.skip(f"the registry fixtures need: {reason}")
    return Certificates(str(tmp_path_factory.mktemp("registry-pki")))


@pytest.fixture
def registry_factory(tmp_path, registry_certificates):
    """``start(tls=False, auth=None, users=None, grants=None) -> Registry``: a registry of this
    test's own (see :func:`serve`); all of them are stopped and removed when the test ends."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options) -> Registry:
            nonlocal count
            count += 1
            directory = str(tmp_path / f"registry{count}")
            return stack.enter_context(serve(directory, registry_certificates, **options))

        yield start


@pytest.fixture
def registry(registry_factory) -> Registry:
    """A plain-HTTP registry without auth, of this test's own."""
    return registry_factory()


@pytest.fixture(scope="session")
def debian_image() -> str:
    """The OCI layout of :func:`debian_layout` (built once, minutes: for benchmarks)."""
    if not shutil.which("debootstrap"):
        pytest.skip("the Debian image needs debootstrap (apt-get install debootstrap)")
    return debian_layout()


@pytest.fixture(scope="session")
def test_layouts(tmp_path_factory, home) -> dict[str, str]:
    """The OCI layouts to push: "layered" (whiteouts) and "multiarch" (an index)."""
    busybox = str(home / "rootfs" / "busybox")
    work = tmp_path_factory.mktemp("registry-images")
    return {
        "layered": layered_layout(str(work / "layered"), busybox),
        "multiarch": multiarch_layout(str(work / "multiarch"), busybox),
    }
