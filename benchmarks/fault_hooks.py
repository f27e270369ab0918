"""What ``faults.py`` runs inside the processes it starts: the fault hooks, and the hostile corpus.

``python benchmarks/fault_hooks.py cli ARGS...`` runs ``policygrad ARGS...`` (as ``python -m
policygrad.cli`` does) after installing what these environment variables ask for; with neither
set it is ``policygrad ARGS...`` unchanged:

``PGF_KILL=CALL:K``
    SIGKILL this process at the K-th call (counted from the start of the process) of ``os.fsync``,
    ``os.replace`` or ``os.unlink``: just before the call (``fsync:K``, ``replace:K``,
    ``unlink:K``) or just after it returns (``fsync-after:K``, ``replace-after:K``,
    ``unlink-after:K``). ``PGF_KILL_LOG=FILE`` receives one line first: the call, its number and
    the file it was about. The library is not changed; the functions are replaced in ``os``,
    where it looks them up at every call.
``PGF_REPORT=FILE``
    Append one JSON line ``{"start_step": N, "resumed": bool}`` to FILE each time
    ``policygrad.training.train`` starts: the step a run (or a ``--resume``) starts training from.
    Nothing else changes.

``python benchmarks/fault_hooks.py build-hostile ROOT`` builds the damaged run directories,
configuration files and MDP files that ``faults.py`` feeds to ``policygrad`` (every case of
tests/test_hostile_runs.py it can import, and the cases below), and writes ``ROOT/manifest.json``:
one entry per case with the command lines to run on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOOKED = ("fsync", "replace", "unlink")


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


def _describe_call(name: str, args: tuple) -> str:
    if not args:
        return ""
    first = args[0]
    if name == "fsync" and isinstance(first, int):
        try:
            return os.readlink(f"/proc/self/fd/{first}")
        except OSError:
            return f"fd {first}"
    return " -> ".join(os.fspath(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))


def install_kill(spec: str, log: str | None) -> None:
    """Replace ``os.<call>`` by a counting wrapper that SIGKILLs the process at the K-th call."""
    call, _, k = spec.partition(":")
    after = call.endswith("-after")
    name = call[: -len("-after")] if after else call
    if name not in HOOKED or not k.isdigit() or int(k) < 1:
        raise SystemExit(f"fault_hooks: bad PGF_KILL={spec!r} (CALL:K, CALL one of {', '.join(HOOKED)}[-after])")
    target, real, count = int(k), getattr(os, name), [0]

    def die(args: tuple) -> None:
        if log:
            line = f"{call} {count[0]} {_describe_call(name, args)}\n".encode("utf-8", "replace")
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, line)
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] == target and not after:
            die(args)
        result = real(*args, **kwargs)
        if count[0] == target and after:
            die(args)
        return result

    setattr(os, name, hooked)


def install_report(path: str) -> None:
    """Wrap ``policygrad.training.train`` so that each start appends its step to ``path``."""
    from policygrad import training

    real = training.train

    def train(session: Any, run_dir: Any, *args: Any, **kwargs: Any) -> Any:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"start_step": int(session.step), "resumed": bool(kwargs.get("resumed", False))}) + "\n")
        return real(session, run_dir, *args, **kwargs)

    training.train = train


def run_cli(argv: list[str]) -> int:
    if os.environ.get("PGF_KILL"):
        install_kill(os.environ["PGF_KILL"], os.environ.get("PGF_KILL_LOG"))
    if os.environ.get("PGF_REPORT"):
        install_report(os.environ["PGF_REPORT"])
    from policygrad.cli import main

    sys.argv = ["policygrad", *argv]
    return main(argv)


# --------------------------------------------------------------------------------------------
# The hostile corpus
# --------------------------------------------------------------------------------------------

TINY = ["--steps", "256", "--set", "num_envs=2", "--set", "num_steps=64", "--set", "tensorboard=false", "--quiet"]
SPARSE = 300 * 2**20  # a 300 MB file that takes no disk space
DEEP = 100_000
GOOD_MDP = {"transitions": [[[0.5, 0.5], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]], "rewards": [[1, 0], [0, 0]],
            "initial": [1.0, 0.0], "gamma": 0.9, "terminal": [1]}
GOOD_TOML = "learning_rate = 0.001\ngamma = 0.98\n"


def _commands(kind: str, path: Path, scratch: Path) -> list[str]:
    """The command line of ``kind`` on the damaged input ``path``."""
    return {
        "eval": ["eval", str(path), "--episodes", "2"],
        "resume": ["train", "--resume", str(path), "--steps", "512"],
        "plot": ["plot", str(path), "--out", str(scratch / f"{path.name}-curves.png")],
        "verify": ["verify", "--mdp", str(path), "--episodes", "50"],
        # No --set: it would override what the file sets.
        "config": ["train", "--config", str(path), "--out", str(scratch / f"{path.name}-run"), "--steps", "256",
                   "--quiet"],
    }[kind]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _last(run: Path) -> Path:
    return run / "checkpoints" / "last"


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _tensors_blob(run: Path, blob: bytes) -> None:
    """Replace the tensors file of ``run``'s last checkpoint by ``blob``, with a meta.json that
    names it correctly (name, sha256, size): only parsing it can refuse it."""
    meta = _last(run) / "meta.json"
    record = json.loads(meta.read_text())
    (_last(run) / record["tensors_file"]).unlink()
    digest = hashlib.sha256(blob).hexdigest()
    name = f"tensors-{digest[:16]}.safetensors"
    (_last(run) / name).write_bytes(blob)
    record.update(tensors_file=name, tensors_sha256=digest, tensors_bytes=len(blob))
    meta.write_text(json.dumps(record))


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _sparse(path: Path, head: bytes) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(SPARSE)


def _own_run_cases() -> list[tuple[str, Callable[[Path, Path], Any], tuple[str, ...]]]:
    """(name, damage(run, root) -> files that must stay untouched or None, commands)."""

    def last_fifo(run: Path, root: Path) -> None:
        shutil.rmtree(_last(run))
        os.mkfifo(_last(run))

    def checkpoints_a_file(run: Path, root: Path) -> None:
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").write_text("not a directory\n")

    def meta_random(run: Path, root: Path) -> None:
        (_last(run) / "meta.json").write_bytes(os.urandom(4096))

    def tensors_random(run: Path, root: Path) -> None:
        record = json.loads((_last(run) / "meta.json").read_text())
        path = _last(run) / record["tensors_file"]
        path.write_bytes(os.urandom(path.stat().st_size))

    def header_huge(run: Path, root: Path) -> None:
        _tensors_blob(run, struct.pack("<Q", 2**62) + b"{}")

    def header_deep(run: Path, root: Path) -> None:
        _tensors_blob(run, _safetensors(b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}"))

    def offsets_beyond(run: Path, root: Path) -> None:
        header = {"policy.actor.net.layers.0.weight": {"dtype": "F32", "shape": [64, 4], "data_offsets": [0, 10**12]}}
        _tensors_blob(run, _safetensors(json.dumps(header).encode(), b"\0" * 64))

    def shape_huge(run: Path, root: Path) -> None:
        header = {"policy.actor.net.layers.0.weight": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 16]}}
        _tensors_blob(run, _safetensors(json.dumps(header).encode(), b"\0" * 16))

    def step_huge(run: Path, root: Path) -> None:
        _edit_text(_last(run) / "meta.json", '"step": 256', '"step": 1' + "0" * 400)

    def total_steps_huge(run: Path, root: Path) -> None:
        _edit_text(run / "config.json", '"total_steps": 256', '"total_steps": 1' + "0" * 400)

    def learning_rate_inf(run: Path, root: Path) -> None:
        path = run / "config.json"
        text, n = re.subn(r'"learning_rate": [^,}\s]+', '"learning_rate": 1e400', path.read_text(), count=1)
        assert n == 1
        path.write_text(text)

    def many_fifo_checkpoints(run: Path, root: Path) -> None:
        shutil.rmtree(_last(run))
        for step in range(1, 2001):
            (run / "checkpoints" / f"step_{step}").mkdir()
            os.mkfifo(run / "checkpoints" / f"step_{step}" / "meta.json")

    def lock_symlink(run: Path, root: Path) -> list[Path]:
        victim = root / f"victim-{run.name}.txt"
        victim.write_text("precious\n")
        (run / ".lock").unlink(missing_ok=True)
        (run / ".lock").symlink_to(victim)
        return [victim]

    both = ("eval", "resume")
    return [
        ("own-last-is-a-fifo", last_fifo, both),
        ("own-checkpoints-is-a-file", checkpoints_a_file, both),
        ("own-meta-random-bytes", meta_random, both),
        ("own-tensors-random-bytes", tensors_random, both),
        ("own-safetensors-header-2^62", header_huge, both),
        ("own-safetensors-header-100k-deep", header_deep, both),
        ("own-safetensors-offsets-beyond", offsets_beyond, both),
        ("own-safetensors-shape-2^62", shape_huge, both),
        ("own-step-10^400", step_huge, both),
        ("own-config-total-steps-10^400", total_steps_huge, both),
        ("own-config-learning-rate-1e400", learning_rate_inf, ("resume",)),  # eval does not use it
        ("own-2000-step-dirs-fifo-meta", many_fifo_checkpoints, both),
        ("own-lock-symlink", lock_symlink, ("resume",)),
    ]


def _file_cases() -> list[tuple[str, str, Callable[[Path], Any]]]:
    """(name, command kind, make(path)) for ``train --config`` and ``verify --mdp`` files."""

    def text(content: str | bytes) -> Callable[[Path], None]:
        def make(path: Path) -> None:
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return make

    def mdp(edit: Callable[[dict], Any] | None = None, raw: Callable[[str], str] | None = None) -> Callable[[Path], None]:
        def make(path: Path) -> None:
            document = json.loads(json.dumps(GOOD_MDP))
            if edit is not None:
                edit(document)
            content = json.dumps(document)
            path.write_text(raw(content) if raw is not None else content)
        return make

    big = "1" + "0" * 400  # 10**400: a JSON integer Python parses, too large for a float
    good = json.dumps(GOOD_MDP)
    return [
        ("config-fifo", "config", _fifo),
        ("config-dev-zero", "config", _dev_zero),
        ("config-300MB", "config", lambda p: _sparse(p, b"gamma = 0.9\n")),
        ("config-array-100k-deep", "config", text("gamma = " + "[" * DEEP + "]" * DEEP + "\n")),
        ("config-inline-table-50k-deep", "config", text("x = " + "{a = " * 50_000 + "1" + " }" * 50_000 + "\n")),
        ("config-integer-5000-digits", "config", text("seed = " + "9" * 5000 + "\n")),
        ("config-bad-toml", "config", text("gamma = \nlearning_rate = 3e-4\n")),
        ("config-not-utf8", "config", text(b'activation = "\xff"\n')),
        ("config-nested-table", "config", text("[ppo]\ngamma = 0.9\n")),
        ("config-learning-rate-a-string", "config", text('learning_rate = "fast"\n')),
        ("config-learning-rate-nan", "config", text("learning_rate = nan\n")),
        ("config-gamma-inf", "config", text("gamma = inf\n")),
        ("config-seed-10^30", "config", text("seed = 1" + "0" * 30 + "\n")),
        ("config-hidden-sizes-huge", "config", text("hidden_sizes = [100000, 100000]\n")),
        ("config-num-envs-10^6", "config", text("num_envs = 1000000\n")),
        ("config-a-directory", "config", lambda p: p.mkdir()),
        ("mdp-fifo", "verify", _fifo),
        ("mdp-dev-zero", "verify", _dev_zero),
        ("mdp-300MB", "verify", lambda p: _sparse(p, b"{")),
        ("mdp-100k-deep", "verify", text("[" * DEEP + "]" * DEEP)),
        ("mdp-gamma-10^400", "verify", mdp(raw=lambda s: s.replace('"gamma": 0.9', f'"gamma": {big}'))),
        ("mdp-reward-10^400", "verify", mdp(raw=lambda s: s.replace('"rewards": [[1,', f'"rewards": [[{big},'))),
        ("mdp-reward-1e400", "verify", mdp(raw=lambda s: s.replace('"rewards": [[1,', '"rewards": [[1e400,'))),
        ("mdp-reward-nan", "verify", mdp(raw=lambda s: s.replace('"rewards": [[1,', '"rewards": [[NaN,'))),
        ("mdp-theta-10^400", "verify", mdp(lambda d: d.update(theta=[[0, 0], [0, 0]]),
                                           raw=lambda s: s.replace('"theta": [[0,', f'"theta": [[{big},'))),
        ("mdp-transitions-strings", "verify", mdp(lambda d: d.update(transitions="abc"))),
        ("mdp-negative-probability", "verify", mdp(lambda d: d["transitions"][0].__setitem__(0, [1.5, -0.5]))),
        ("mdp-truncated", "verify", text(good[: len(good) // 2])),
        ("mdp-not-utf8", "verify", text(b'{"transitions": "\xff"}')),
        ("mdp-a-list", "verify", text("[1, 2, 3]")),
        ("mdp-a-directory", "verify", lambda p: p.mkdir()),
    ]


def build_hostile(root: Path) -> None:
    """Write the corpus under ``root`` and ``root/manifest.json`` (see the module docstring)."""
    from policygrad.cli import main

    root.mkdir(parents=True, exist_ok=True)
    bases, cases_dir, scratch = root / "bases", root / "cases", root / "scratch"
    for d in (bases, cases_dir, scratch):
        d.mkdir(exist_ok=True)
    imported: Any = None
    import_error = None
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import test_hostile_runs as imported
    except Exception as err:  # noqa: BLE001  (pytest missing, tests/ absent: the own cases only)
        import_error = f"{type(err).__name__}: {err}"
    finally:
        sys.path.pop(0)
    tiny = list(getattr(imported, "TINY", TINY))
    for name, extra in (("run", ["--set", "normalize_obs=true", "--set", "normalize_reward=true"]),
                        ("torch", ["--set", "backend=torch"]),
                        ("other", ["--env", "Acrobot-v1"])):
        if main(["train", *tiny, *extra, "--out", str(bases / name)]) != 0:
            raise SystemExit(f"fault_hooks: could not train the base run {name}")
        for kept in (bases / name / "checkpoints").glob("step_*"):
            shutil.rmtree(kept)

    entries: list[dict[str, Any]] = []

    def add(name: str, group: str, path: Path, kinds: tuple[str, ...], untouched: list[Path] | None = None) -> None:
        entries.append({
            "name": name, "group": group, "path": str(path),
            "commands": [_commands(k, path, scratch) for k in kinds],
            "untouched": [[str(p), _sha(p)] for p in (untouched or [])],
        })

    for case in getattr(imported, "CASES", []):
        run = cases_dir / case.name
        shutil.copytree(bases / case.base, run, symlinks=True)
        case.damage(run, bases)
        add(case.name, "run directory (tests/test_hostile_runs.py)", run,
            tuple(c for c in case.commands if c != "load"))
    for name, damage, kinds in _own_run_cases():
        run = cases_dir / name
        shutil.copytree(bases / "run", run, symlinks=True)
        untouched = damage(run, root)
        add(name, "run directory (faults.py)", run, kinds, untouched)
    for name, kind, make in _file_cases():
        path = cases_dir / (name + (".toml" if kind == "config" else ".json"))
        make(path)
        add(name, "config file" if kind == "config" else "MDP file", path, (kind,))

    # Controls: the same commands on intact inputs (their peak memory is the baseline).
    (root / "good.toml").write_text(GOOD_TOML)
    (root / "good-mdp.json").write_text(json.dumps(GOOD_MDP))
    controls = {}
    for kind, path in (("eval", bases / "run"), ("resume", bases / "run"), ("plot", bases / "run"),
                       ("verify", root / "good-mdp.json"), ("config", root / "good.toml")):
        if kind == "resume":
            path = root / "control-resume"
            shutil.copytree(bases / "run", path, symlinks=True)
        controls[kind] = _commands(kind, path, scratch)
    (root / "manifest.json").write_text(json.dumps({"cases": entries, "controls": controls,
                                                    "import_error": import_error}, indent=1))


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "cli":
        return run_cli(argv[1:])
    if len(argv) == 2 and argv[0] == "build-hostile":
        build_hostile(Path(argv[1]))
        return 0
    print("usage: fault_hooks.py cli ARGS... | build-hostile ROOT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # benchmarks/ holds scripts, not modules for policygrad to import
    sys.exit(main(sys.argv[1:]))
