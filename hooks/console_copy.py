"""An mkdocs hook: the copy button of a console transcript copies its commands only.

Material's copy button copies a code block's text, prompts and output included
(squidfunk/mkdocs-material#8392), so a learner pasting a transcript into a shell would run
``$``, ``hello from ...`` and the rest. Pygments' console lexer (BashSessionLexer) already
marks each prompt (``$ ``, the ``> `` of a continued line) as ``gp``; this hook reads the
highlighted HTML back, keeps the lines that start with a prompt, drops the prompts, and puts
the result in the block's ``data-copy`` attribute, which Material's copy button copies
instead of the text when it is present (``integrations/clipboard`` in its sources). A ``# ``
line of a transcript is a comment (the chapters' prompt is ``$ ``), and stays one. Blocks
without a prompt (plain ``sh`` blocks of commands) are left alone: the whole text is the
command. The chapters keep their transcript format, which tests/test_docs.py runs.
"""

from __future__ import annotations

import html
import re

BLOCK = re.compile(r'(<div class="[^"]*\bhighlight\b[^"]*")(>.*?<code>)(.*?</code>)', re.S)
PROMPT = re.compile(r'^<span class="gp">([^<]*)</span>')
TAG = re.compile(r"<[^>]+>")


def commands(code: str) -> str | None:
    """The commands of a highlighted block's lines, prompts left out; None without a prompt."""
    lines = []
    for line in code.split("\n"):
        prompt = PROMPT.match(line)
        if prompt:
            text = html.unescape(TAG.sub("", line[prompt.end() :]))
            lines.append(f"# {text}" if prompt.group(1) == "# " else text)
    return "\n".join(lines) if lines else None


def with_copy_text(block: re.Match) -> str:
    """The block with a ``data-copy`` attribute, if it has commands to copy."""
    div, start, code = block.groups()
    copied = commands(code.removesuffix("</code>"))
    if copied is None:
        return block.group(0)
    attribute = html.escape(copied, quote=True).replace("\n", "&#10;")
    return f'{div} data-copy="{attribute}"{start}{code}'


def on_page_content(content: str, **kwargs) -> str:
    """mkdocs' hook for a page's HTML (https://www.mkdocs.org/dev-guide/plugins/#on_page_content)."""
    return BLOCK.sub(with_copy_text, content)
