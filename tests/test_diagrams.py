"""Every step chapter has a picture, and every picture works offline, in light and dark mode.

The diagrams are hand-written SVG in docs/img/ (docs/contributing.md, "Diagrams"). The site
must work in a room without internet, so a diagram may fetch nothing: no fonts, scripts,
images or stylesheets from a URL. And it must read on Material's dark page as on the light
one: each draws a white card behind its content (an ``<img>`` cannot see the page's scheme).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
IMAGES = DOCS / "img"
SVG = "{http://www.w3.org/2000/svg}"
NAMESPACE_URIS = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")

# The diagram each chapter must show (issue 17): other pages refer to these names.
CHAPTER_DIAGRAMS = {
    "step1-uts.md": "namespaces.svg",
    "step2-pid.md": "clone-pid1.svg",
    "step3-mount.md": "pivot-root.svg",
    "step4-cgroups.md": "cgroup-tree.svg",
    "step5-image.md": "overlay.svg",
    "step6-veth.md": "veth-bridge-nat.svg",
    "step7-security.md": "protection-layers.svg",
    "step8-exec.md": "setns-exec.svg",
    "step9-oci.md": "oci-lifecycle.svg",
}
_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>img/[^)\s]+\.svg)\)")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>)]*", re.IGNORECASE)


def svgs() -> list[Path]:
    return sorted(IMAGES.glob("*.svg"))


def test_every_step_chapter_is_listed():
    """A new chapter gets a diagram too: add it to CHAPTER_DIAGRAMS."""
    assert sorted(path.name for path in DOCS.glob("step*.md")) == sorted(CHAPTER_DIAGRAMS)


@pytest.mark.parametrize("chapter", sorted(CHAPTER_DIAGRAMS))
def test_every_step_chapter_has_a_diagram(chapter):
    """The chapter embeds its diagram, with a text alternative, and the file exists."""
    embedded = {
        match["src"]: match["alt"] for match in _IMAGE.finditer((DOCS / chapter).read_text())
    }
    expected = f"img/{CHAPTER_DIAGRAMS[chapter]}"
    assert expected in embedded, f"docs/{chapter} does not show {expected}"
    assert embedded[expected].strip(), f"docs/{chapter}: {expected} has no alt text"
    for source in embedded:
        assert (DOCS / source).is_file(), f"docs/{chapter} shows {source}, which does not exist"


def test_every_diagram_is_shown():
    """No SVG in docs/img that no page uses: an orphan would drift from the text unseen."""
    pages = "".join(path.read_text() for path in DOCS.rglob("*.md"))
    unused = [path.name for path in svgs() if f"img/{path.name}" not in pages]
    assert not unused, f"docs/img has diagrams that no page shows: {unused}"


@pytest.mark.parametrize("path", svgs(), ids=lambda path: path.name)
def test_diagram_is_self_contained_svg(path):
    """Well-formed SVG with a title, and nothing it would fetch: no URL but the namespaces',
    no reference that is not to its own elements, no script, no embedded HTML."""
    text = path.read_text()
    root = ElementTree.fromstring(text)  # raises on XML that is not well-formed
    assert root.tag == f"{SVG}svg", f"{path.name}: the root element is {root.tag}, not svg"
    assert root.get("viewBox"), f"{path.name}: no viewBox, so it cannot scale"
    assert root.find(f"{SVG}title") is not None, f"{path.name}: no <title> for screen readers"
    urls = [url for url in _URL.findall(text) if url not in NAMESPACE_URIS]
    assert not urls, f"{path.name} refers to {urls}: the site must work offline"
    for element in root.iter():
        assert element.tag not in (f"{SVG}script", f"{SVG}foreignObject", f"{SVG}image"), (
            f"{path.name}: <{element.tag.removeprefix(SVG)}> is not allowed"
        )
        for name, value in element.attrib.items():
            if name.endswith("href"):
                assert value.startswith("#"), f"{path.name}: {name}={value!r} is not local"
            for reference in re.findall(r"url\(([^)]*)\)", value):
                assert reference.strip("'\" ").startswith("#"), f"{path.name}: url({reference})"
    style = "".join(element.text or "" for element in root.iter(f"{SVG}style"))
    assert "@import" not in style and "@font-face" not in style, f"{path.name}: loads a style"
    for reference in re.findall(r"url\(([^)]*)\)", style):
        assert reference.strip("'\" ").startswith("#"), f"{path.name}: url({reference})"


@pytest.mark.parametrize("path", svgs(), ids=lambda path: path.name)
def test_diagram_has_a_white_card(path):
    """Its first shape is a white rectangle over the whole picture: dark text stays
    readable on Material's dark scheme (slate) as on the light one."""
    root = ElementTree.fromstring(path.read_text())
    _x, _y, width, height = (float(number) for number in root.get("viewBox").split())
    shapes = [element for element in root if element.tag.removeprefix(SVG) not in
              ("title", "desc", "style", "defs", "metadata")]  # fmt: skip
    card = shapes[0] if shapes else None
    assert card is not None and card.tag == f"{SVG}rect", f"{path.name}: no card first"
    assert card.get("fill", "").lower() in ("#fff", "#ffffff", "white"), (
        f"{path.name}: the card is not white (fill={card.get('fill')!r})"
    )
    assert float(card.get("width")) >= width - 1 and float(card.get("height")) >= height - 1, (
        f"{path.name}: the card does not cover the picture"
    )
