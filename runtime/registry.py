"""A client of the OCI distribution API: what ``mycontainer pull`` asks a registry.

The flow (https://github.com/opencontainers/distribution-spec/blob/main/spec.md, "Pull"):

1. ``GET /v2/``, the ping: 200, or 401 with a ``WWW-Authenticate`` challenge that says how to
   authenticate (below); it also tells a registry from whatever else listens there.
2. ``GET /v2/<name>/manifests/<tag or digest>`` with an ``Accept`` header listing the
   manifest types we read: an index (a manifest per platform) or an image manifest, OCI's
   or Docker's (schema 2). The body's sha256 is the manifest's digest.
3. ``GET /v2/<name>/blobs/<digest>``: the config, then each layer. Registries often answer
   307 to object storage (S3, a CDN): redirects are followed here, one by one, without our
   ``Authorization`` header once on another host, and never from HTTPS to plain HTTP.

Authentication (https://distribution.github.io/distribution/spec/auth/token/): a 401's
``WWW-Authenticate: Bearer realm=...,service=...`` names a token server; ``GET realm?service=
...&scope=repository:<name>:pull`` (with the user's name and secret as HTTP basic, if
``runtime.credentials`` has some, else anonymously) gives a token, sent back as
``Authorization: Bearer``; a token server in plain HTTP is refused as redirects to one are.
``WWW-Authenticate: Basic`` asks for the name and secret on every request (RFC 7617).
Tokens and secrets are never printed: messages name the registry and the status only.

The transport is urllib3 (see docs/pull.md for why): a pool of keep-alive connections
shared by the threads that fetch layers, TLS verified against the system's CAs
(``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` too, as OpenSSL reads them, and docker's
``/etc/docker/certs.d/<host>/*.crt``), ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, connect
and read timeouts, retries with exponential backoff on 429, 5xx and broken connections,
and a blob cut short resumed where it stopped with a ``Range`` request (RFC 9110, 14.2).
A body that trickles in (under 1 KiB/s over a read timeout, as curl's ``--speed-limit``)
counts as broken: a server sending a byte a second would otherwise never time out.
A registry on this machine (localhost, 127.0.0.0/8, ::1, as docker's default), one named in
``MYCONTAINER_INSECURE_REGISTRIES`` (``host[:port]``, comma-separated) or any with
``--tls-verify=false`` may answer in plain HTTP when it speaks no TLS; only the last skips
checking the certificate of one that does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
import urllib.parse

import urllib3

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 20.0  # seconds without a byte: a stalled server
LOW_SPEED = 1024  # bytes a second at least, over each read timeout: else a trickle, cut
ATTEMPTS = 5  # per request, and per blob for resumes
BACKOFF = 0.5  # seconds before the first retry; doubled at each next one
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
CHUNK = 256 << 10
CERTS_DIRECTORIES = ("/etc/docker/certs.d", "/etc/containers/certs.d")
STATUS_TEXT = {
    401: "authentication required",
    403: "access denied",
    404: "not found",
    429: "too many requests: the registry limits pulls; try again later, or log in",
}
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
# urllib3 logs its retries as warnings, which Python would print on stderr (its "last
# resort" handler) among our output: they are ours to report.
logging.getLogger("urllib3").addHandler(logging.NullHandler())
logging.getLogger("urllib3").propagate = False


class RegistryError(Exception):
    """What the registry answered, or failed to; one line, naming no secret."""


class CredentialsRefused(RegistryError):
    """The registry, or its token server, refused the user name and secret we sent."""


class BodyBroken(RegistryError):
    """The connection broke, or stalled, while an answer's body was read."""


class Pace:
    """Refuses a body that trickles in: under LOW_SPEED bytes a second over a window of a
    read timeout (``window`` seconds), as curl's ``--speed-limit``/``--speed-time``. The read
    timeout alone ends a server that sends nothing, not one that sends a byte a second."""

    def __init__(self, window: float):
        self.window = window
        self.start = time.monotonic()
        self.received = 0

    def add(self, count: int) -> None:
        self.received += count
        elapsed = time.monotonic() - self.start
        if elapsed >= self.window:
            if self.received < LOW_SPEED * elapsed:
                raise BodyBroken(f"too slow: under {LOW_SPEED >> 10} KiB/s for {elapsed:.0f} s")
            self.start, self.received = time.monotonic(), 0


def timeout() -> urllib3.Timeout:
    """Connect and read timeouts; ``MYCONTAINER_REGISTRY_TIMEOUT`` (seconds) sets the read
    timeout (the time a stalled server is given, per read)."""
    read = READ_TIMEOUT
    text = os.environ.get("MYCONTAINER_REGISTRY_TIMEOUT")
    if text:
        try:
            read = float(text)
        except ValueError:
            message = f"MYCONTAINER_REGISTRY_TIMEOUT must be seconds (got {text!r})"
            raise RegistryError(message) from None
    return urllib3.Timeout(connect=min(CONNECT_TIMEOUT, read), read=read)


def allows_plain_http(host: str) -> bool:
    """May the registry ``host[:port]`` answer in plain HTTP? Loopback ones, as docker's
    default insecure range (127.0.0.0/8), and those in MYCONTAINER_INSECURE_REGISTRIES."""
    named = os.environ.get("MYCONTAINER_INSECURE_REGISTRIES", "").replace(" ", "").split(",")
    hostname = urllib3.util.parse_url(f"//{host}").host or ""
    loopback = hostname in ("localhost", "::1", "[::1]") or hostname.startswith("127.")
    return loopback or host in named or hostname in named


class Client:
    """A registry's API for one repository, as one user: ``registry`` (``host[:port]``),
    ``repository`` (``library/alpine``; None for the ping alone, as ``login`` asks),
    ``credentials`` (user, secret) or None; ``tls_verify`` False to accept any certificate
    (and plain HTTP)."""

    def __init__(self, registry: str, repository: str | None, credentials=None, tls_verify=True):
        self.registry = registry
        self.repository = repository
        self.credentials = credentials
        self.tls_verify = tls_verify
        self.scheme = "https"
        self.authorization: str | None = None  # the header our requests carry
        self.timeout = timeout()
        self.pools: dict[str, urllib3.PoolManager] = {}

    # --- the API ---------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/``: checks that a registry answers, in which scheme, and how it wants
        us to authenticate (the token, if it asks for one, is fetched here)."""
        if self.tls_verify and self._plain_http(self.registry) and not self._speaks_tls():
            self.scheme = "http"  # it speaks no TLS; on this host, plain HTTP is allowed
        try:
            response = self._request("/v2/")
        except RegistryError as error:
            if not (self._may_fall_back(error) and self.scheme == "https"):
                raise
            self.scheme = "http"  # (the same, found out through a proxy)
            response = self._request("/v2/")
        if response.status == 401 and self.authorization and self.credentials:
            raise CredentialsRefused(self._status_message(response, "/v2/"))
        if response.status != 200:
            raise RegistryError(self._status_message(response, "/v2/"))

    def manifest(self, reference: str, limit: int) -> tuple[str, bytes]:
        """(media type, body) of the manifest ``reference`` (a tag or a digest); at most
        ``limit`` bytes are read."""
        path = f"/v2/{self.repository}/manifests/{reference}"
        return self._whole(path, {"Accept": ACCEPT}, limit, f"manifest {reference}")

    def blob(self, digest: str, limit: int, what: str) -> bytes:
        """The blob ``digest`` (a config), whole, checked; at most ``limit`` bytes."""
        path = f"/v2/{self.repository}/blobs/{digest}"
        _media_type, data = self._whole(path, {}, limit, f"{what} {digest}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"{what} {digest}: its content has another digest")
        return data

    def stream_blob(self, digest: str, size: int, write, progress=None) -> None:
        """Pass the bytes of blob ``digest`` (``size`` of them, as its descriptor says) to
        ``write`` as they arrive; ``progress(received)`` after each piece. A connection
        broken or stalled midway is retried with backoff, asking for the rest only
        (``Range: bytes=N-``); more than ``size`` bytes is refused. (The unpacking that
        ``write`` feeds checks the digest: runtime.layer.)"""
        path = f"/v2/{self.repository}/blobs/{digest}"
        received = 0
        failure = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                response = self._request(path, headers)
            except RegistryError as error:
                failure = str(error)
                continue
            if response.status not in (200, 206):
                raise RegistryError(f"blob {digest}: {self._status_message(response, path)}")
            skip = received if response.status == 200 else 0  # a Range ignored: from 0 again
            pace = Pace(self.timeout.read_timeout)
            try:
                # read1: what has arrived, so that a connection lost midway loses nothing
                while chunk := response.read1(CHUNK, decode_content=False):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    received += len(chunk)
                    pace.add(len(chunk))
                    if received > size:
                        raise RegistryError(
                            f"blob {digest}: larger than the {size} bytes its descriptor says"
                        )
                    write(chunk)
                    if progress:
                        progress(received)
            except (urllib3.exceptions.HTTPError, OSError, BodyBroken) as error:
                if isinstance(error, BrokenPipeError):  # the reader is gone: it says why
                    raise
                response.close()  # (not back to the pool with a body unread)
                cause = error if isinstance(error, BodyBroken) else _cause(error)
                failure = f"connection broken after {received} of {size} bytes ({cause})"
                continue
            finally:
                response.release_conn()
            if received == size:
                return
            failure = f"the body ended after {received} of {size} bytes"
        raise RegistryError(f"blob {digest}: {failure}, {ATTEMPTS} times")

    # --- requests --------------------------------------------------------------------

    def _whole(self, path: str, headers: dict, limit: int, what: str) -> tuple[str, bytes]:
        """(media type, body) of ``path``, read whole, at most ``limit`` bytes; a body cut
        short is asked for again, with backoff."""
        failure = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            response = self._request(path, headers)
            if response.status != 200:
                raise RegistryError(f"{what}: {self._status_message(response, path)}")
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                return media_type, self._read_bounded(response, limit, what)
            except BodyBroken as error:
                failure = error
        raise RegistryError(f"{failure}, {ATTEMPTS} times")

    def _request(self, path: str, headers: dict | None = None, url: str | None = None):
        """GET ``path`` on the registry (or ``url``), authenticating as a 401 asks, and
        following redirects; retried on 429, 5xx and broken connections. The response's
        body is not read yet (release_conn() it)."""
        url = url or f"{self.scheme}://{self.registry}{path}"
        authenticated = False
        for _redirect in range(MAX_REDIRECTS + 1):
            ours = urllib3.util.parse_url(url).netloc == self.registry
            sent = dict(headers or {})
            if ours and self.authorization:
                sent["Authorization"] = self.authorization
            response = self._get(url, sent)
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status == 401 and ours and not authenticated and challenge:
                response.drain_conn()
                self._authenticate(challenge)
                authenticated = True
                continue
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                response.drain_conn()
                if not location:
                    raise RegistryError(f"{path}: a redirect ({response.status}) to nowhere")
                target = urllib.parse.urljoin(url, location)
                self._check_redirect(url, target, path)
                url = target
                continue
            return response
        raise RegistryError(f"{path}: over {MAX_REDIRECTS} redirects")

    def _check_redirect(self, source: str, target: str, path: str) -> None:
        scheme = urllib3.util.parse_url(target).scheme
        host = urllib3.util.parse_url(target).netloc or ""
        if scheme not in ("http", "https"):
            raise RegistryError(f"{path}: redirected to a {scheme}: address, refused")
        if scheme == "http" and (source.startswith("https:") or not self._plain_http(host)):
            raise RegistryError(
                f"{path}: redirected to plain HTTP ({host}), refused: the bytes could be changed "
                "on their way"
            )

    def _get(self, url: str, headers: dict):
        retries = urllib3.Retry(
            total=ATTEMPTS - 1,
            connect=2,  # refused, or no answer in time
            read=2,  # reset, or stalled, before the answer's headers
            other=0,  # a TLS failure: a plain HTTP server, or a certificate, said at once
            redirect=False,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=BACKOFF,
            respect_retry_after_header=False,  # Docker Hub's 429 says hours: we say so
            raise_on_status=False,
        )
        try:
            return self._pool(url).request(
                "GET",
                url,
                headers=headers,
                retries=retries,
                timeout=self.timeout,
                preload_content=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as error:
            host = urllib3.util.parse_url(url).netloc
            raise RegistryError(f"cannot reach {host}: {_cause(error)}") from error

    def _pool(self, url: str) -> urllib3.PoolManager:
        """The connection pool for ``url``: through the proxy that the environment names
        for it (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), verifying TLS as set."""
        import urllib.request

        parsed = urllib3.util.parse_url(url)
        proxy = urllib.request.getproxies_environment().get(parsed.scheme)
        if proxy and urllib.request.proxy_bypass_environment(parsed.host or ""):
            proxy = None
        key = f"{proxy}|{parsed.scheme}|{parsed.host}"
        if key not in self.pools:
            options = {"num_pools": 8, "maxsize": 8}
            if parsed.scheme == "https" or proxy:  # (loading the CAs takes 20 ms)
                options["ssl_context"] = self._tls(parsed.netloc)
            if proxy:
                self.pools[key] = urllib3.ProxyManager(proxy, **options)
            else:
                self.pools[key] = urllib3.PoolManager(**options)
        return self.pools[key]

    def _tls(self, host: str):
        """The TLS settings for ``host``: the system's CAs (and SSL_CERT_FILE, SSL_CERT_DIR),
        plus docker's per-registry ``certs.d/<host>/*.crt``; none with --tls-verify=false."""
        import ssl

        context = urllib3.util.ssl_.create_urllib3_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context.load_default_certs()
        for directory in CERTS_DIRECTORIES:
            folder = os.path.join(directory, host)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if name.endswith(".crt"):
                    context.load_verify_locations(os.path.join(folder, name))
        return context

    def _plain_http(self, host: str) -> bool:
        return not self.tls_verify or allows_plain_http(host)

    def _speaks_tls(self) -> bool:
        """Whether the registry (a host that may answer in plain HTTP) completes a TLS
        handshake: checked without its certificate, so that a plain HTTP one is found out
        without loading the system's CAs first (20 ms); one that does is then asked over
        verified TLS. Through a proxy, or if it cannot be reached, the request says."""
        import socket
        import ssl
        import urllib.request

        parsed = urllib3.util.parse_url(f"//{self.registry}")
        if urllib.request.getproxies_environment().get("https") and not (
            urllib.request.proxy_bypass_environment(parsed.host or "")
        ):
            return True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        host = (parsed.host or "").strip("[]")  # (an IPv6 address without its brackets)
        try:
            address = (host, parsed.port or 443)
            with socket.create_connection(address, self.timeout.connect_timeout) as connection:
                connection.settimeout(self.timeout.read_timeout)
                with context.wrap_socket(connection, server_hostname=host):
                    return True
        except ssl.SSLError:
            return False
        except OSError:
            return True

    def _may_fall_back(self, error: RegistryError) -> bool:
        """Whether a failed TLS handshake means a plain HTTP server we may use instead: on
        a host that allows it, and not a certificate that failed verification."""
        cause = error.__cause__
        reason = getattr(cause, "reason", cause)
        tls_failed = isinstance(reason, urllib3.exceptions.SSLError)
        certificate = "CERTIFICATE_VERIFY_FAILED" in str(reason)
        return tls_failed and not certificate and self._plain_http(self.registry)

    # --- authentication --------------------------------------------------------------

    def _authenticate(self, challenge: str) -> None:
        """Set our Authorization header as the 401's ``challenge`` asks."""
        scheme, _, parameters = challenge.strip().partition(" ")
        fields = {
            (m.group(1) or m.group(3)).lower(): m.group(2) if m.group(1) else m.group(4)
            for m in _CHALLENGE.finditer(parameters)
        }
        if scheme.lower() == "basic":
            if not self.credentials:
                raise RegistryError(
                    f"{self.registry} asks for a user name and password: "
                    f"'mycontainer login {self.registry}' first"
                )
            self.authorization = _basic(*self.credentials)
        elif scheme.lower() == "bearer" and fields.get("realm"):
            self.authorization = f"Bearer {self._token(fields)}"
        else:
            raise RegistryError(f"{self.registry} asks for an authentication we do not know")

    def _token(self, fields: dict) -> str:
        """A token from the token server the challenge names, for pulling our repository (no
        scope without one: a login's); ``account`` names the user, as docker's client does."""
        query = {"scope": f"repository:{self.repository}:pull"} if self.repository else {}
        if self.credentials:
            query["account"] = self.credentials[0]
        if fields.get("service"):
            query["service"] = fields["service"]
        realm = fields["realm"]
        separator = "&" if "?" in realm else "?"
        url = f"{realm}{separator}{urllib.parse.urlencode(query)}"
        parsed = urllib3.util.parse_url(url)
        if parsed.scheme not in ("http", "https"):
            raise RegistryError(f"{self.registry}: its token server is no HTTP address")
        if parsed.scheme == "http" and (
            self.scheme == "https" or not self._plain_http(parsed.netloc)
        ):
            raise RegistryError(  # (the secret, or the token, would travel in the clear)
                f"{self.registry}: its token server is plain HTTP ({parsed.netloc}), refused: "
                "the credentials could be read on their way"
            )
        headers = {"Authorization": _basic(*self.credentials)} if self.credentials else {}
        response = self._get(url, headers)
        try:
            if response.status in (401, 403) and self.credentials:
                raise CredentialsRefused(
                    f"{self.registry}: the token server refused our credentials "
                    f"({response.status}): 'mycontainer login {self.registry}' again"
                )
            if response.status != 200:
                raise RegistryError(f"{self.registry}: the token server answered {response.status}")
            body = self._read_bounded(response, 1 << 20, "the token server's answer")
        finally:
            response.release_conn()
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: the token server's answer holds no token")
        return token

    def _status_message(self, response, path: str) -> str:
        """What an unexpected status means, in one line (the body is released)."""
        status = response.status
        response.drain_conn()
        if status == 401:
            login = f"'mycontainer login {self.registry}'"
            if self.authorization:
                return f"authentication failed (401): {login} with other credentials"
            return f"authentication required (401): {login} first"
        text = STATUS_TEXT.get(status) or (
            "the registry failed" if status >= 500 else "unexpected answer"
        )
        if status == 404 and path == "/v2/":
            text = "no registry API here (no /v2/)"
        if status == 403 or (status == 404 and path != "/v2/"):
            text += " (or no access without logging in)" if not self.credentials else ""
        return f"{text} ({status})"

    def _read_bounded(self, response, limit: int, what: str) -> bytes:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            response.drain_conn()
            raise RegistryError(f"{what} is {int(length)} bytes, over the {limit >> 20} MiB bound")
        pace = Pace(self.timeout.read_timeout)
        pieces = []
        size = 0
        try:
            while size <= limit and (piece := response.read1(CHUNK, decode_content=True)):
                pieces.append(piece)
                size += len(piece)
                pace.add(len(piece))
        except urllib3.exceptions.HTTPError as error:
            raise BodyBroken(f"{what}: {_cause(error)}") from error
        except BodyBroken as error:
            response.close()  # (not back to the pool with a body unread)
            raise BodyBroken(f"{what}: {error}") from None
        finally:
            response.release_conn()
        data = b"".join(pieces)
        if len(data) > limit:
            raise RegistryError(f"{what} is over the {limit >> 20} MiB bound")
        return data


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def _cause(error: BaseException) -> str:
    """The root cause of a urllib3 error, in a few words (no URL query, no header)."""
    reason = getattr(error, "reason", None) or error
    verify_message = getattr(reason.__context__, "verify_message", None) or getattr(
        reason, "verify_message", None
    )
    if verify_message or "CERTIFICATE_VERIFY_FAILED" in str(reason):
        return (
            f"its certificate is not trusted (CERTIFICATE_VERIFY_FAILED: {verify_message}): "
            "add its CA to /etc/docker/certs.d/HOST/ca.crt or SSL_CERT_FILE, "
            "or use --tls-verify=false"
        )
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError) or "timed out" in str(reason):
        return "no answer in time (timed out)"
    if isinstance(reason, urllib3.exceptions.ProtocolError) and reason.args[1:]:
        reason = reason.args[1]
    text = str(reason).split(": ", 1)[-1] if isinstance(reason, Exception) else str(reason)
    return text.strip()[:160] or type(reason).__name__
