"""``mycontainer login``'s check: do a user name and secret open a registry?

As ``docker login``: the distribution spec's ping, ``GET /v2/``, first without credentials;
a registry that answers 200 asks for none. A 401 names the scheme in its
``WWW-Authenticate`` challenge (RFC 7235): ``Basic`` (``/v2/`` is asked again with the
credentials) or ``Bearer realm=…,service=…`` (the token flow of Docker Hub and ghcr: the
realm, asked with the credentials and ``account=USER`` but no scope, answers a token only if
they are right). That is the pull's own client (:class:`runtime.registry.Client`), with its
transport: TLS, plain HTTP where allowed, proxies, timeouts; only the answer to the user
differs: a refusal means a wrong user name or password.
"""

from __future__ import annotations

from runtime.credentials import normalize
from runtime.reference import DOCKER_HUB, DOCKER_HUB_API


class LoginError(Exception):
    """The registry refused the credentials, or could not be asked; the message says which."""


def check(registry: str, username: str, secret: str, tls_verify: bool = True) -> None:
    """Raise :class:`LoginError` unless ``username`` and ``secret`` open ``registry``."""
    from runtime.registry import Client, CredentialsRefused, RegistryError

    host = normalize(registry)
    host = DOCKER_HUB_API if host == DOCKER_HUB else host
    try:
        Client(host, None, (username, secret), tls_verify).ping()
    except CredentialsRefused:
        raise LoginError(f"login to {host} failed: wrong user name or password") from None
    except RegistryError as error:
        raise LoginError(f"login to {host} failed: {error}") from None
