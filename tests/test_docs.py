"""Every ```python example in the README and in docs/ runs as written (in a fresh interpreter, so
that examples cannot lean on each other or on the test process), and what it prints is what the
text around it says where the text quotes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCUMENTS:
        for i, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8"))):
            found.append((f"{path.relative_to(ROOT)}#{i + 1}", code))
    return found


EXAMPLES = _examples()


def test_there_are_examples_to_run() -> None:
    assert {name.split("#")[0] for name, _ in EXAMPLES} >= {"README.md", "docs/backends.md"}


@pytest.mark.slow
@pytest.mark.parametrize("name,code", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_example_runs(name: str, code: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    # A `# prints X` comment in the example is a claim about its output.
    for claim in re.findall(r"#\s*prints\s+(.+?)\s*$", code, re.M):
        assert claim in proc.stdout, f"{name}: the text says it prints {claim!r}, it printed {proc.stdout!r}"


@pytest.mark.slow
def test_the_backends_example_prints_the_same_step_on_both_backends(tmp_path: Path) -> None:
    (code,) = [code for name, code in EXAMPLES if name.startswith("docs/backends.md")]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("numpy - ") and lines[2].startswith("torch - ")
    assert lines[1] == lines[3] and "policy loss" in lines[1]  # the same step, to the printed digits
