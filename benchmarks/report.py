"""What the benchmark scripts share: printing a result and keeping it in a file."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, out: Path | None) -> None:
    """Print ``text`` and, when ``out`` is given, also write it there (creating its folder)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
