"""Every example in the README and in docs/ runs as written.

* ```python blocks run in a fresh interpreter each (so that examples cannot lean on each other or on
  the test process), and a ``# prints X`` comment is a claim about what the block prints.
* ```bash blocks run command by command, in order, in one temporary directory per document (so a
  later block may evaluate the run an earlier block trained), with ``policygrad`` on the PATH
  running this tree's sources and one torch, OpenMP and BLAS thread. Each command must exit 0,
  unless it ends with a comment ``# exits N``: then it must exit N and print exactly one line on
  stderr, ``policygrad: error: ...``. Each command runs in its own shell, so nothing but files
  carries over from one to the next; a heredoc (``cat > my.toml <<'EOF'``) writes an input file.
* ```console blocks are transcripts: each ``$ command`` runs like a bash command, and the lines
  after it, up to the next ``$``, must be exactly what it prints on stdout.
* A block that cannot run here (set-up scripts, ``pip install``, benchmarks that take minutes) is
  marked on the line right before its fence with ``<!-- not run: REASON -->``. A runnable block may
  call only the commands in :data:`COMMANDS`, so a block that needs anything else fails the fast
  tier until it is marked or changed.
* Every fence names its language, one of :data:`LANGUAGES` (```text for output, file trees and usage
  lines, which are not run).
* Every relative link names a file of the repository and, where it has one, a heading of it, as the
  Markdown is read in the repository (the site build, tests/test_docs_site.py, checks the site).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LANGUAGES = ("python", "bash", "console", "text", "toml", "json")
"""The fence languages the docs use; a shell block is ```bash (commands) or ```console (a transcript)."""

COMMANDS = ("policygrad", "cat", "echo", "printf", "ls")
"""What a runnable shell command may start with: the library's command and harmless file helpers."""

EXTRAS = {"scaling-out.md": "ray"}
"""Documents whose examples need an optional package (the rest of the suite passes without it)."""
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
EXITS = re.compile(r"#\s*exits\s+(?P<code>\d+)\b")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>\w+)\1")
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    not_run: str | None  # the reason given in a `<!-- not run: ... -->` line before the fence

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One shell command of a block, with what it must do."""

    where: str  # document:line
    text: str  # as the shell receives it (continuations and heredoc included)
    exits: int  # the expected exit code
    stdout: str | None  # a transcript's expected output, None for a bash block


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: the fence opened here is never closed"
        marker = NOT_RUN.match(lines[i - 1].strip()) if i > 0 else None
        text = "\n".join(lines[i + 1:end]) + "\n"
        blocks.append(Block(path, i + 1, info, text, marker.group("reason") if marker else None))
        i = end + 1
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in _blocks(path)]
EXAMPLES = [(block.name, block.text) for block in BLOCKS if block.lang == "python" and block.not_run is None]
SHELL = [block for block in BLOCKS if block.lang in ("bash", "console")]


def _shell_commands(block: Block) -> list[Command]:
    """The commands of a ```bash block, or the ``$`` commands of a ```console transcript."""
    lines = block.text.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if block.lang == "console":
            if not line.startswith("$ "):
                raise AssertionError(f"{block.path.relative_to(ROOT)}:{block.line + 1 + i}: output before any `$ ` command")
            line = line[2:]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start, text = i, line
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        heredoc = HEREDOC.search(text)
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc.group("word"):
                i += 1
                text += "\n" + lines[i]
        i += 1
        stdout = None
        if block.lang == "console":
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i].rstrip())
                i += 1
            stdout = "\n".join(output).rstrip("\n")
        exits = EXITS.search(text.splitlines()[0] if heredoc else text)
        where = f"{block.path.relative_to(ROOT)}:{block.line + 1 + start}"
        commands.append(Command(where, text, int(exits.group("code")) if exits else 0, stdout))
    return commands


def _runnable(path: Path) -> list[Command]:
    return [command for block in SHELL if block.path == path and block.not_run is None
            for command in _shell_commands(block)]


def test_there_are_examples_to_run() -> None:
    assert {name.split(":")[0] for name, _ in EXAMPLES} >= {"README.md", "docs/backends.md"}
    assert {str(path.relative_to(ROOT)) for path in DOCUMENTS if _runnable(path)} >= {
        "README.md", "docs/training.md", "docs/backends.md", "docs/verify.md", "docs/average-reward.md"}


def test_every_fence_names_a_known_language() -> None:
    for block in BLOCKS:
        assert block.lang in LANGUAGES, (
            f"{block.name}: fence language {block.lang!r}; use one of {LANGUAGES} (shell commands are ```bash, "
            "transcripts with `$ ` prompts ```console, output and usage lines ```text)")


def test_not_run_marks_give_a_reason_and_sit_on_runnable_languages() -> None:
    for block in BLOCKS:
        if block.not_run is not None:
            assert block.not_run, f"{block.name}: `<!-- not run: REASON -->` needs its reason"
            assert block.lang in ("python", "bash", "console"), f"{block.name}: a ```{block.lang} block is never run"


def test_runnable_shell_commands_are_ones_the_test_can_run() -> None:
    for block in SHELL:
        if block.not_run is not None:
            continue
        for command in _shell_commands(block):
            program = shlex.split(command.text.splitlines()[0], comments=True)[0]
            assert program in COMMANDS, (
                f"{command.where}: `{program}` cannot run in the docs test (it runs {', '.join(COMMANDS)}); "
                "make the example runnable, or put `<!-- not run: REASON -->` on the line before the fence")
            if command.exits:
                assert program == "policygrad", f"{command.where}: `# exits N` is for policygrad commands"


def _prose(path: Path) -> str:
    """A Markdown file without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


def _anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, spelled as GitHub and MkDocs's toc spell them."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", _prose(path), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-") for heading in headings}


def test_relative_links_name_files_and_headings_that_exist() -> None:
    for path in [*DOCUMENTS, *sorted((ROOT / "benchmarks").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(path)):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}: link {target!r}"
            assert resolved.exists(), f"{where}: {file} does not exist"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved), f"{where}: {resolved.relative_to(ROOT)} has no heading #{anchor}"


def _policygrad_on_path(bin_dir: Path) -> dict[str, str]:
    """The environment of the shell examples: ``policygrad`` runs this tree's sources with the test's
    interpreter, one thread per runtime."""
    bin_dir.mkdir()
    wrapper = bin_dir / "policygrad"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m policygrad.cli "$@"\n')
    wrapper.chmod(0o755)
    pythonpath = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **THREADS, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": pythonpath}


def _check(command: Command, proc: subprocess.CompletedProcess[str]) -> None:
    shown = f"{command.where}: `{command.text}`\n--- stdout:\n{proc.stdout[-2000:]}\n--- stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == command.exits, f"exit code {proc.returncode}, the docs expect {command.exits}\n{shown}"
    if command.exits:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("policygrad: error: "), (
            f"an expected failure prints one `policygrad: error:` line\n{shown}")
    else:
        assert "Traceback" not in proc.stderr, shown
    if command.stdout is not None:
        printed = "\n".join(line.rstrip() for line in proc.stdout.splitlines()).rstrip("\n")
        assert printed == command.stdout, f"the transcript differs from what the command prints\n{shown}"


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCUMENTS if _runnable(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_examples_run(path: Path, tmp_path: Path) -> None:
    import importlib.util

    needs = EXTRAS.get(path.name)
    if needs is not None and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{path.name}'s examples need {needs}, which is not installed")
    env = _policygrad_on_path(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    for command in _runnable(path):
        proc = subprocess.run(["bash", "-c", command.text], check=False, capture_output=True, text=True, cwd=work, env=env,
                              timeout=600)
        _check(command, proc)


@pytest.mark.slow
@pytest.mark.parametrize("name,code", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_example_runs(name: str, code: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, **THREADS})
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    # A `# prints X` comment in the example is a claim about its output.
    for claim in re.findall(r"#\s*prints\s+(.+?)\s*$", code, re.MULTILINE):
        assert claim in proc.stdout, f"{name}: the text says it prints {claim!r}, it printed {proc.stdout!r}"


@pytest.mark.slow
def test_the_backends_example_prints_the_same_step_on_both_backends(tmp_path: Path) -> None:
    (code,) = [code for name, code in EXAMPLES if name.startswith("docs/backends.md")]
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("numpy - ") and lines[2].startswith("torch - ")
    assert lines[1] == lines[3] and "policy loss" in lines[1]  # the same step, to the printed digits
