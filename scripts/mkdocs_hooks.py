"""MkDocs hooks (mkdocs.yml ``hooks:``): the benchmark reports become pages of the site.

The docs link to ``../benchmarks/README.md`` and ``../benchmarks/results/*.md``, which sit outside
``docs/``, so that the links work where the Markdown is read in the repository. For the site, every
Markdown file under ``benchmarks/`` is published at ``benchmarks/...``, and each relative link whose
target is a file in ``docs/`` or one of those published files is rewritten to the target's place in
the site. Any other link is left as written, so MkDocs's own check still reports it (and ``strict``
fails the build on it).

The docstrings cross-reference in Sphinx's roles (``:class:`Model```, ``:func:`~a.b.load```), which
Markdown does not know; in the API reference they are shown as the code they wrap (the last
component where the name starts with ``~``).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("benchmarks",)
"""Folders of the repository whose Markdown files are published in the site under their own path."""

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(?P<tilde>~?)(?P<name>[^<]*)</code>")
_LINK = re.compile(r"(\]\()(?P<target>[^)\s#:]+)(?P<anchor>#[^)\s]*)?(\))")


def on_files(files: Files, config: Any) -> Files:
    for folder in PUBLISHED:
        for path in sorted((ROOT / folder).rglob("*.md")):
            files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def _site_uri(target: Path, docs_dir: Path) -> str | None:
    """Where the repository file ``target`` is in the site, or None if it is not published."""
    if target.is_relative_to(docs_dir):
        return target.relative_to(docs_dir).as_posix()
    if target.suffix == ".md" and any(target.is_relative_to(ROOT / folder) for folder in PUBLISHED):
        return target.relative_to(ROOT).as_posix()
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    source = Path(page.file.abs_src_path).resolve()
    here = posixpath.dirname(page.file.src_uri) or "."

    def rewrite(match: re.Match[str]) -> str:
        target = Path(os.path.normpath(source.parent / match.group("target")))
        uri = _site_uri(target, docs_dir) if target.is_file() else None
        if uri is None:
            return match.group(0)
        relative = posixpath.relpath(uri, here)
        return f"{match.group(1)}{relative}{match.group('anchor') or ''}{match.group(4)}"

    return _LINK.sub(rewrite, markdown)



def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    def code(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"<code>{name.rpartition('.')[2] if match.group('tilde') else name}</code>"

    return _ROLE.sub(code, html)
