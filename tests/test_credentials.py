"""Credentials (runtime/credentials.py) in docker's and podman's files, and ``mycontainer
login``/``logout`` against real registries (tests/registry.py): basic and token auth, TLS.
skopeo, which reads and writes the same files (containers/image), checks that they agree."""

from __future__ import annotations

import base64
import json
import os
import pty
import stat
import subprocess
import sys

import pytest

from runtime import credentials
from runtime.credentials import CredentialsError

from conftest import REPO, read_until

pytest_plugins = ["registry"]


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A home of the test's own, with no credentials file, and the variables that move them
    unset (XDG_RUNTIME_DIR and XDG_CONFIG_HOME pointing into it)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return {
        "docker": home / ".docker" / "config.json",
        "podman": tmp_path / "run" / "containers" / "auth.json",
        "podman-config": home / ".config" / "containers" / "auth.json",
    }


def write(path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def auth(user: str, secret: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{secret}".encode()).decode()}


# --- the files -------------------------------------------------------------------------------


def test_lookup_reads_podman_then_docker_as_podman_does(user_files, monkeypatch, tmp_path):
    assert credentials.lookup("ghcr.io") is None  # no file at all: anonymous
    write(user_files["docker"], {"auths": {"ghcr.io": auth("docker-user", "d")}})
    assert credentials.lookup("ghcr.io") == ("docker-user", "d")
    write(user_files["podman-config"], {"auths": {"ghcr.io": auth("config-user", "c")}})
    assert credentials.lookup("ghcr.io") == ("config-user", "c")
    write(user_files["podman"], {"auths": {"ghcr.io": auth("podman-user", "p")}})
    assert credentials.lookup("ghcr.io") == ("podman-user", "p")
    assert credentials.where("ghcr.io") == str(user_files["podman"])
    # REGISTRY_AUTH_FILE replaces the runtime file; DOCKER_CONFIG moves docker's.
    other = tmp_path / "other.json"
    write(other, {"auths": {"quay.io": auth("override", "o")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(other))
    assert credentials.lookup("quay.io") == ("override", "o")
    assert credentials.lookup("ghcr.io") == ("config-user", "c")
    write(tmp_path / "dockerdir" / "config.json", {"auths": {"gcr.io": auth("moved", "m")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockerdir"))
    assert credentials.lookup("gcr.io") == ("moved", "m")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    assert credentials.read_paths()[0] == f"/run/containers/{os.getuid()}/auth.json"


def test_keys_match_by_host_and_docker_hub_by_any_of_its_names(user_files):
    write(
        user_files["docker"],
        {
            "auths": {
                "https://index.docker.io/v1/": auth("hub", "h"),
                "https://ghcr.io/v1/": auth("gh", "g"),
                "http://127.0.0.1:5000": auth("local", "l"),
            }
        },
    )
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io", "DOCKER.IO"):
        assert credentials.lookup(name) == ("hub", "h")
    assert credentials.lookup("ghcr.io") == ("gh", "g")
    assert credentials.lookup("127.0.0.1:5000") == ("local", "l")
    assert credentials.lookup("127.0.0.1:5001") is None


def test_store_and_erase_keep_the_rest_of_the_file(user_files):
    path = user_files["docker"]
    others = {
        "auths": {"quay.io": auth("q", "1")},
        "psFormat": "table {{.ID}}",
        "HttpHeaders": {"X": "y"},
    }
    write(path, others)
    assert credentials.store("docker.io", "alice", "s3cret:with:colons") == str(path)
    content = json.loads(path.read_text())
    assert content["auths"]["https://index.docker.io/v1/"] == auth("alice", "s3cret:with:colons")
    assert {k: v for k, v in content.items() if k != "auths"} == {
        "psFormat": "table {{.ID}}",
        "HttpHeaders": {"X": "y"},
    }
    assert content["auths"]["quay.io"] == others["auths"]["quay.io"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.lookup("registry-1.docker.io") == ("alice", "s3cret:with:colons")
    credentials.store("index.docker.io", "bob", "2")  # the same registry: one entry
    assert list(json.loads(path.read_text())["auths"]) == ["quay.io", "https://index.docker.io/v1/"]
    assert credentials.erase("docker.io") == str(path)
    assert json.loads(path.read_text()) == others
    before = path.stat().st_mtime_ns
    assert credentials.erase("docker.io") is None
    assert path.stat().st_mtime_ns == before  # nothing to remove: the file is left alone
    assert sorted(os.listdir(path.parent)) == ["config.json"]  # no temporary file left


def test_store_makes_the_directory_and_follows_a_symbolic_link(user_files, tmp_path):
    assert credentials.store("ghcr.io", "alice", "x") == str(user_files["docker"])
    assert stat.S_IMODE(user_files["docker"].parent.stat().st_mode) == 0o700
    real = tmp_path / "dotfiles" / "docker.json"
    write(real, {"auths": {}})
    user_files["docker"].unlink()
    user_files["docker"].symlink_to(real)
    credentials.store("ghcr.io", "alice", "y")
    assert user_files["docker"].is_symlink()
    assert json.loads(real.read_text())["auths"]["ghcr.io"] == auth("alice", "y")


def test_credential_helpers_are_reported_in_one_line(user_files):
    write(user_files["docker"], {"auths": {"docker.io": {}}, "credsStore": "desktop"})
    with pytest.raises(CredentialsError, match="docker-credential-desktop.*not support") as error:
        credentials.lookup("docker.io")
    assert "\n" not in str(error.value)
    assert credentials.lookup("ghcr.io") is None  # not in the helper: anonymous, as docker
    with pytest.raises(CredentialsError, match="docker-credential-desktop"):
        credentials.store("ghcr.io", "alice", "x")
    write(user_files["docker"], {"auths": {}, "credHelpers": {"gcr.io": "gcloud"}})
    with pytest.raises(CredentialsError, match="docker-credential-gcloud"):
        credentials.lookup("gcr.io")
    assert credentials.lookup("ghcr.io") is None


def test_bad_files_are_reported_without_their_secrets(user_files):
    user_files["docker"].parent.mkdir(parents=True)
    user_files["docker"].write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0"}')
    with pytest.raises(CredentialsError, match="is not valid JSON.*fix or remove it"):
        credentials.lookup("ghcr.io")
    with pytest.raises(CredentialsError):  # nor is it overwritten
        credentials.store("ghcr.io", "alice", "x")
    write(user_files["docker"], {"auths": {"ghcr.io": {"auth": "c2VjcmV0"}}})  # "secret"
    with pytest.raises(CredentialsError, match="not base64 of 'user:password'") as error:
        credentials.lookup("ghcr.io")
    assert "secret" not in str(error.value) and "c2VjcmV0" not in str(error.value)
    write(user_files["docker"], {"auths": {"ghcr.io": {"identitytoken": "t0ken"}}})
    with pytest.raises(CredentialsError, match="identity token") as error:
        credentials.lookup("ghcr.io")
    assert "t0ken" not in str(error.value)
    write(user_files["docker"], {"auths": ["ghcr.io"]})
    with pytest.raises(CredentialsError, match="not a credentials file"):
        credentials.lookup("ghcr.io")


# --- login and logout, against real registries -----------------------------------------------


def mycontainer(*args: str, stdin: str = "", env_extra=None) -> subprocess.CompletedProcess:
    """``mycontainer ARGS`` with this test's HOME and XDG variables (user_files'), stdin a pipe."""
    env = dict(os.environ, PYTHONPATH=REPO, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def skopeo_inspect(registry, *flags: str) -> subprocess.CompletedProcess:
    command = ["skopeo", "inspect", *registry.skopeo_flags(), *flags]
    command.append(f"docker://{registry.host}/layered:v1")
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_login_with_basic_auth_checks_then_saves_as_docker(
    user_files, registry_factory, test_layouts
):
    registry = registry_factory(auth="basic", users={"alice": "wonderland"})
    registry.push(f"oci:{test_layouts['layered']}:latest", "layered:v1")
    wrong = mycontainer("login", "-u", "alice", "--password-stdin", registry.host, stdin="rabbit\n")
    assert (wrong.returncode, wrong.stdout) == (125, "")
    assert (
        wrong.stderr
        == f"mycontainer: error: login to {registry.host} failed: wrong user name or password\n"
    )
    assert not user_files["docker"].exists()  # nothing saved
    assert "authentication required" in skopeo_inspect(registry).stderr

    login = mycontainer(
        "login", "-u", "alice", "--password-stdin", registry.host, stdin="wonderland\n"
    )
    assert (login.returncode, login.stdout) == (0, "Login Succeeded\n"), login.stderr
    path = user_files["docker"]
    assert login.stderr == f"WARNING! Your password will be stored unencrypted in {path}.\n"
    assert "wonderland" not in login.stdout + login.stderr
    assert json.loads(path.read_text()) == {"auths": {registry.host: auth("alice", "wonderland")}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # skopeo (containers/image) finds what login wrote where docker's is, and is let in.
    assert skopeo_inspect(registry).returncode == 0

    logout = mycontainer("logout", registry.host)
    assert (logout.returncode, logout.stdout) == (
        0,
        f"Removing login credentials for {registry.host}\n",
    )
    assert json.loads(path.read_text()) == {"auths": {}}
    again = mycontainer("logout", registry.host)
    assert (again.returncode, again.stdout, again.stderr) == (
        0,
        f"Not logged in to {registry.host}\n",
        "",
    )


def test_login_with_the_token_flow_over_tls(user_files, registry_factory):
    registry = registry_factory(auth="token", tls=True, users={"alice": "wonderland"})
    trusted = {"SSL_CERT_FILE": registry.ca}
    untrusted = mycontainer(
        "login", "-u", "alice", "--password-stdin", registry.host, stdin="wonderland"
    )
    assert untrusted.returncode == 125
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert untrusted.stderr.startswith(
        f"mycontainer: error: cannot reach {registry.host} (https://"
    )
    wrong = mycontainer(
        "login", "-u", "alice", "--password-stdin", registry.host, stdin="rabbit", env_extra=trusted
    )
    assert "failed: wrong user name or password" in wrong.stderr
    login = mycontainer(
        "login",
        "-u",
        "alice",
        "--password-stdin",
        registry.host,
        stdin="wonderland",
        env_extra=trusted,
    )
    assert (login.returncode, login.stdout) == (0, "Login Succeeded\n"), login.stderr
    assert credentials.lookup(registry.host) == ("alice", "wonderland")
    # The token server saw alice's right password once, asking for no repository.
    granted = [r for r in registry.token_server.requests if "granted" in r]
    assert [(r["account"], r["scopes"]) for r in granted] == [("alice", [])]
    # --tls-verify=false: no CA needed.
    insecure = mycontainer(
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "--password-stdin",
        registry.host,
        stdin="wonderland",
    )
    assert insecure.returncode == 0, insecure.stderr


def test_login_to_a_registry_without_auth_and_over_plain_http(user_files, registry):
    """A loopback registry may speak plain HTTP (docker's insecure 127.0.0.0/8); one that
    asks for no credentials lets anyone in, and docker logs in all the same."""
    login = mycontainer("login", "-u", "bob", "--password-stdin", registry.host, stdin="x")
    assert (login.returncode, login.stdout) == (0, "Login Succeeded\n"), login.stderr
    assert credentials.lookup(registry.host) == ("bob", "x")


def test_login_options_as_docker(user_files, registry_factory):
    registry = registry_factory(auth="basic", users={"alice": "wonderland"})
    unsafe = mycontainer("login", "-u", "alice", "-p", "wonderland", registry.host)
    assert unsafe.returncode == 0
    assert unsafe.stderr.startswith(
        "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
    )
    both = mycontainer("login", "-u", "alice", "-p", "x", "--password-stdin", registry.host)
    assert both.returncode == 125
    assert "--password and --password-stdin are mutually exclusive" in both.stderr
    no_user = mycontainer("login", "--password-stdin", registry.host, stdin="x")
    assert (no_user.returncode, no_user.stderr) == (
        125,
        "mycontainer: error: --password-stdin needs --username (see 'mycontainer login --help')\n",
    )
    no_terminal = mycontainer("login", registry.host)
    assert no_terminal.returncode == 125
    assert "give --username and --password-stdin" in no_terminal.stderr
    assert json.loads(user_files["docker"].read_text())["auths"] == {
        registry.host: auth("alice", "wonderland")
    }


def test_credentials_written_by_skopeo_login_are_read_and_logout_names_what_is_left(
    user_files, registry_factory, tmp_path, monkeypatch
):
    registry = registry_factory(auth="basic", users={"alice": "wonderland"})
    podman_file = tmp_path / "podman-auth.json"
    skopeo = subprocess.run(
        ["skopeo", "login", "--authfile", str(podman_file), "--tls-verify=false"]
        + ["-u", "alice", "--password-stdin", registry.host],
        input="wonderland",
        capture_output=True,
        text=True,
    )
    assert skopeo.returncode == 0, skopeo.stderr
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman_file))
    assert credentials.lookup(registry.host) == ("alice", "wonderland")
    # logout changes the file login writes: REGISTRY_AUTH_FILE's, as podman logout.
    logout = mycontainer("logout", registry.host)
    assert logout.stdout == f"Removing login credentials for {registry.host}\n"
    assert credentials.lookup(registry.host) is None
    # Credentials in a file login does not write are named, not silently kept.
    write(user_files["docker"], {"auths": {registry.host: auth("alice", "wonderland")}})
    logout = mycontainer("logout", registry.host)
    assert logout.stdout == f"Not logged in to {registry.host}\n"
    left = f"{user_files['docker']} still has credentials for {registry.host}, used from there"
    assert logout.stderr == f"WARNING! {left}.\n"


def test_login_asks_on_the_terminal_without_echoing_the_password(user_files, registry_factory):
    registry = registry_factory(auth="basic", users={"alice": "wonderland"})
    controller, terminal = pty.openpty()
    login = subprocess.Popen(
        [sys.executable, "-m", "runtime", "login", registry.host],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    os.close(terminal)
    try:
        read_until(controller, b"Username: ")
        os.write(controller, b"alice\n")
        read_until(controller, b"Password: ")
        os.write(controller, b"wonderland\n")
        shown = read_until(controller, b"Login Succeeded")
        assert login.wait(timeout=30) == 0
    finally:
        login.kill()
        login.wait()
        os.close(controller)
    assert b"wonderland" not in shown  # typed, not echoed
    assert credentials.lookup(registry.host) == ("alice", "wonderland")
