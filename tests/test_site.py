"""The built docs site, as a workshop uses it: offline, from a folder or the lab VM's port.

- nothing is fetched from the internet (a room's Wi-Fi may be down): no fonts, scripts or
  stylesheets from another host, and nothing that makes the theme fetch some at runtime;
- the site opens from its folder (file://): pages are .html files, the search index a script;
- a console transcript's copy button copies its commands, without prompts or output
  (hooks/console_copy.py), the very commands tests/test_docs.py runs;
- the navigation keeps the learners' path (set up, the steps) free of maintainers' pages;
- ``invoke docs --serve`` serves the built site on every interface, on the port the
  Vagrantfile forwards to the host.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_docs import DOCS, parse_transcript, read_blocks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as ``invoke docs`` builds it (strict)."""
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=REPO,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        check=True,
        capture_output=True,
    )
    return site


class Resources(html.parser.HTMLParser):
    """What a page makes the browser load: (tag, URL), and its code blocks' data-copy texts."""

    LOADED = {"link": "href", "script": "src", "img": "src", "iframe": "src", "source": "src",
              "embed": "src", "object": "data", "audio": "src", "video": "src"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[tuple[str, str]] = []
        self.copies: list[str] = []
        self.classes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        url = attrs.get(self.LOADED.get(tag, ""))
        if url and not (tag == "link" and attrs.get("rel") in ("next", "prev", "canonical")):
            self.loaded.append((tag, url))
        if "data-copy" in attrs:
            self.copies.append(attrs["data-copy"])
        self.classes.update((attrs.get("class") or "").split())


def page_of(site: Path, markdown: str) -> Resources:
    """The built page of docs/``markdown``, parsed, whichever URL style built it."""
    built = site / Path(markdown).with_suffix(".html")
    if not built.exists():  # use_directory_urls: page/index.html
        built = site / Path(markdown).with_suffix("") / "index.html"
    parsed = Resources()
    parsed.feed(built.read_text())
    return parsed


def pages(site: Path) -> dict[Path, Resources]:
    parsed = {}
    for page in sorted(site.rglob("*.html")):
        parsed[page] = Resources()
        parsed[page].feed(page.read_text())
    return parsed


def test_site_loads_nothing_from_the_internet(site):
    """No page loads a font, script, stylesheet or image from another host: the theme's
    default Google Fonts are off (theme.font), and no plugin adds a polyfill from a CDN."""
    remote = re.compile(r"^(https?:)?//", re.I)
    found = [
        f"{page.relative_to(site)}: <{tag}> {url}"
        for page, parsed in pages(site).items()
        for tag, url in parsed.loaded
        if remote.match(url)
    ]
    css_url = re.compile(r"""(?:url\(|@import\s)\s*["']?((?:https?:)?//[^"')\s]+)""")
    for sheet in site.rglob("*.css"):
        found += [f"{sheet.relative_to(site)}: {url}" for url in css_url.findall(sheet.read_text())]
    assert not found, "fetched from the internet:\n" + "\n".join(found)


def test_no_page_makes_the_theme_fetch_scripts(site):
    """Material loads mermaid from unpkg.com for a page with a mermaid diagram, and asks
    api.github.com for a repository's stars when repo_url names one: neither works offline.
    (Diagrams are SVG files in the repository: issue 17.)"""
    for page, parsed in pages(site).items():
        assert "mermaid" not in parsed.classes, f"{page.relative_to(site)}: a mermaid diagram"
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!ENV", ""))
    assert "github.com" not in str(config.get("repo_url", "")), "repo_url: facts from GitHub"


def test_site_opens_from_its_folder(site):
    """From file://, a link to a folder shows a listing, not its index.html: so links name
    .html files (use_directory_urls: false). Search needs the served site."""
    index = (site / "index.html").read_text()
    assert 'href="step1-uts.html"' in index
    assert 'href="step1-uts/"' not in index


def test_copy_button_copies_the_commands_the_transcripts_run(site):
    """Every checked transcript's block carries, for the copy button, exactly the commands
    tests/test_docs.py runs: no ``$ `` prompt, no output, continued lines kept."""
    checked = 0
    for markdown in sorted(DOCS.rglob("*.md")):
        transcripts = [block for block in read_blocks(markdown) if block.checked]
        if not transcripts:
            continue
        parsed = page_of(site, str(markdown.relative_to(DOCS)))
        for block in transcripts:
            commands = "\n".join(command.text for command in parse_transcript(block))
            assert commands in parsed.copies, f"{block.where}: the copy button copies another text"
            checked += 1
    assert checked > 50, f"only {checked} checked transcripts found"


def test_copy_button_of_a_transcript_leaves_out_prompts_and_output(site):
    """Step 1's first transcript, by hand: no prompt, no output."""
    assert page_of(site, "step1-uts.md").copies[:1] == [
        "python3 -m steps.step1_uts --hostname box -- hostname\n"
        "python3 -m steps.step1_uts --hostname box -- uname -n\n"
        "python3 -m steps.step1_uts --hostname box -- sh -c 'hostname other; hostname'\n"
        'test "$(hostname)" != other && echo "the host kept its name"'
    ]
    for copied in (text for parsed in pages(site).values() for text in parsed.copies):
        assert not copied.startswith(("$ ", "> ")), copied


def test_the_theme_copies_data_copy():
    """The copy button copies a block's data-copy attribute instead of its text: this is
    Material's code (integrations/clipboard), read here so that an upgrade that drops it
    fails this test rather than the learners' paste."""
    material = importlib.util.find_spec("material")
    if material is None:
        pytest.skip("material is not installed (pip install -e '.[dev]')")
    bundles = list(Path(material.origin).parent.glob("templates/assets/javascripts/bundle.*.js"))
    assert bundles and all('closest("[data-copy]")' in bundle.read_text() for bundle in bundles)


def test_navigation_keeps_maintainers_pages_off_the_learners_path():
    """Set up, then the steps in order; run.md and the lab's maintenance pages after them."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!ENV", ""))["nav"]

    def files(entries) -> list[str]:
        found = []
        for entry in entries if isinstance(entries, list) else [entries]:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += files(value) if isinstance(value, list) else [value]
        return found

    named = [
        next(iter(entry.items())) if isinstance(entry, dict) else (entry, entry) for entry in nav
    ]
    titles = [title for title, _ in named]
    path = files([value for _, value in named[: titles.index("The steps") + 1]])
    steps = sorted(p.name for p in DOCS.glob("step*.md"))
    assert [page for page in path if page.startswith("step")] == steps
    for page in ("run.md", "lab/qemu-runner.md", "lab/pytest-vagrant.md", "lab/instructors.md"):
        assert page not in path, f"{page} is on the learners' path"
        assert page in files(nav), f"{page} left the navigation"
    assert path[:4] == ["index.md", "lab/index.md", "lab/setup.md", "lab/troubleshooting.md"]


def test_vagrantfile_forwards_the_docs_port():
    """``invoke docs --serve`` in the VM is seen on the host: the Vagrantfile forwards the
    guest's port the task serves on, to the host's localhost only."""
    import tasks

    vagrantfile = (REPO / "Vagrantfile").read_text()
    forwarded = re.search(r'"forwarded_port", guest: (\d+), host: \w+, host_ip: "([^"]+)"',
                          vagrantfile)  # fmt: skip
    assert forwarded, "the Vagrantfile forwards no port for the docs"
    assert int(forwarded[1]) == tasks.DOCS_PORT
    assert forwarded[2] == "127.0.0.1"


@pytest.mark.privileged  # it listens on every interface: in the session's network namespace only
def test_invoke_docs_serve_serves_the_built_site_on_every_interface(tmp_path):
    """A forwarded port reaches the guest's own address, not its loopback: the server must
    listen on every interface. 127.0.0.2 stands for such an address here (a server bound to
    127.0.0.1 alone does not answer it)."""
    port = 8917
    server = subprocess.Popen(
        [sys.executable, "-m", "invoke", "docs", "--serve", "--port", str(port)],
        cwd=REPO,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.2:{port}/step3-mount.html") as page:
                    assert page.status == 200
                    assert "pivot_root" in page.read().decode()
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the docs server did not answer in 60 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/search/search_index.json") as index:
            assert index.status == 200
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert f"serving the docs on http://localhost:{port}/" in server.stdout.read()
