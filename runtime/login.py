"""``mycontainer login``'s check: do a user name and secret open a registry?

As ``docker login``: ``GET /v2/`` (the distribution spec's API version check) without
credentials; a registry that answers 200 asks for none. A 401 names the scheme in its
``WWW-Authenticate`` challenge (RFC 7235): ``Basic`` (the credentials go with every request:
``/v2/`` is asked again with them), or ``Bearer realm=…,service=…`` (the token flow of
Docker Hub and ghcr, distribution's docs/spec/auth/token.md: the realm, asked with the
credentials and ``account=USER``, answers a token only if they are right; ``/v2/`` is then
asked with the token).

Transport as the pull's: HTTPS verified against the system's CAs (``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` as OpenSSL reads them) and docker's per-registry ``certs.d/HOST/*.crt``;
plain HTTP only for a registry on this machine (docker's default insecure range,
127.0.0.0/8), one named in ``MYCONTAINER_INSECURE_REGISTRIES``, or with ``--tls-verify=false``,
which also accepts any certificate; ``HTTPS_PROXY``/``NO_PROXY`` honoured (urllib.request).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import urllib.error
import urllib.parse

from runtime.credentials import normalize

CERTS_DIRECTORIES = ("/etc/docker/certs.d", "/etc/containers/certs.d")
TIMEOUT = 30  # seconds, to connect and per read
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


class LoginError(Exception):
    """The registry refused the credentials, or could not be asked; the message says which."""


def check(registry: str, username: str, secret: str, tls_verify: bool = True) -> None:
    """Raise :class:`LoginError` unless ``username`` and ``secret`` open ``registry``."""
    host = normalize(registry)
    host = DOCKER_HUB if host == "docker.io" else host
    base = _base_url(host, tls_verify)
    status, headers = _get(f"{base}/v2/", None, host, tls_verify)
    if status == 200:
        return  # it asks for no credentials: docker logs in all the same
    if status != 401:
        raise LoginError(f"login to {host} failed: /v2/ answered HTTP {status}")
    scheme, _, parameters = (headers.get("WWW-Authenticate") or "").strip().partition(" ")
    fields = {
        (m.group(1) or m.group(3)).lower(): m.group(2) if m.group(1) else m.group(4)
        for m in _CHALLENGE.finditer(parameters)
    }
    basic = "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()
    if scheme.lower() == "basic":
        authorization = basic
    elif scheme.lower() == "bearer" and fields.get("realm"):
        authorization = "Bearer " + _token(host, fields, username, basic, tls_verify)
    else:
        raise LoginError(f"login to {host} failed: it asks for an authentication we do not know")
    status, _ = _get(f"{base}/v2/", authorization, host, tls_verify)
    if status == 401:
        raise LoginError(f"login to {host} failed: wrong user name or password")
    if status != 200:
        raise LoginError(f"login to {host} failed: /v2/ answered HTTP {status}")


def _token(host: str, fields: dict, username: str, basic: str, tls_verify: bool) -> str:
    """A token from the challenge's realm for ``username``; no scope: a login asks for none."""
    query = {"account": username}
    if fields.get("service"):
        query["service"] = fields["service"]
    realm = fields["realm"]
    url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(query)}"
    status, body = _get(url, basic, host, tls_verify, body=True)
    if status == 401:
        raise LoginError(f"login to {host} failed: wrong user name or password")
    if status != 200:
        raise LoginError(f"login to {host} failed: its token server answered HTTP {status}")
    try:
        answer = json.loads(body)
        token = answer.get("token") or answer.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise LoginError(f"login to {host} failed: its token server answered no token")
    return token


def _base_url(host: str, tls_verify: bool) -> str:
    """``https://HOST``, or ``http://HOST`` if it speaks no TLS and may answer in plain HTTP."""
    try:
        _get(f"https://{host}/v2/", None, host, tls_verify)
    except LoginError as error:
        cause = error.__cause__
        reason = getattr(cause, "reason", cause)
        handshake = isinstance(reason, ssl.SSLError)
        certificate = isinstance(reason, ssl.SSLCertVerificationError)
        if handshake and not certificate and (not tls_verify or allows_plain_http(host)):
            return f"http://{host}"
        raise
    return f"https://{host}"


def allows_plain_http(host: str) -> bool:
    """May ``host[:port]`` answer in plain HTTP? Loopback, as docker's default insecure range
    (127.0.0.0/8), and those in MYCONTAINER_INSECURE_REGISTRIES (comma-separated)."""
    named = os.environ.get("MYCONTAINER_INSECURE_REGISTRIES", "").replace(" ", "").split(",")
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
    loopback = hostname in ("localhost", "::1") or hostname.startswith("127.")
    return loopback or host in named or hostname in named


def _get(url: str, authorization, host: str, tls_verify: bool, body: bool = False):
    """GET ``url`` -> (status, headers), or (status, body text) with ``body``."""
    import urllib.request  # here: imported as on macOS (test_platform), it needs _scproxy

    request = urllib.request.Request(url, headers={"User-Agent": "mycontainer"})
    if authorization:
        request.add_unredirected_header("Authorization", authorization)
    handlers = [urllib.request.HTTPSHandler(context=_tls(host, tls_verify))]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.read(1 << 20).decode(
                errors="replace"
            ) if body else response.headers
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(1 << 20).decode(
                errors="replace"
            ) if body else error.headers
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise LoginError(f"cannot reach {host} ({url.split('?')[0]}): {reason}") from error


def _tls(host: str, tls_verify: bool) -> ssl.SSLContext:
    """The system's CAs and docker's ``certs.d/HOST/*.crt``; none with ``tls_verify`` False."""
    context = ssl.create_default_context()
    if not tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    for directory in CERTS_DIRECTORIES:
        folder = os.path.join(directory, host)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".crt"):
                context.load_verify_locations(os.path.join(folder, name))
    return context
