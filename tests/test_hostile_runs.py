"""A run directory received from someone else cannot hurt or hang its reader.

Tiny runs are trained once (module scope). Each case copies one, damages the copy one way, and
runs what reads it: ``policygrad eval``, ``policygrad train --resume``, ``policygrad.load`` and,
for metrics.csv, ``policygrad plot``. Each must end with exit code 2 and one line
``policygrad: error: …`` (an InputError from ``policygrad.load``). A timer (SIGALRM) turns a
reader that hangs into a failure, and the cases that would read without end if they regressed
(``/dev/zero``, huge sparse files) run under a limit on the address space a little above what the
process holds, so that a regression fails with a MemoryError instead of filling the machine. A
slow test repeats those cases in a fresh interpreter and reports the memory they took.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

import policygrad as pg
from policygrad.checkpoint import MAX_TENSORS_BYTES, load_checkpoint, save_checkpoint
from policygrad.cli import main
from policygrad.errors import InputError
from policygrad.files import MAX_JSON_DEPTH, json_depth, parse_json
from policygrad.logging import METRICS_MAX_BYTES, MetricsLogger

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="FIFOs, /dev/zero and /proc/self/status as on Linux")

TINY = ["--steps", "256", "--set", "num_envs=2", "--set", "num_steps=64", "--set", "tensorboard=false", "--quiet"]
HANG_SECONDS = 60  # far above the fraction of a second each case takes: a hang detector, not a speed test
SPARSE = 300 * 2**20  # a 300 MB file that takes no disk space


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run`` (PPO on CartPole with both normalisers, the NumPy backend), ``torch`` (the same on
    the torch backend) and ``other`` (PPO on Acrobot), each with only ``checkpoints/last``."""
    root = tmp_path_factory.mktemp("hostile")
    for name, extra in (("run", ["--set", "normalize_obs=true", "--set", "normalize_reward=true"]),
                        ("torch", ["--set", "backend=torch"]),
                        ("other", ["--env", "Acrobot-v1"])):
        assert main(["train", *TINY, *extra, "--out", str(root / name)]) == 0
        for kept in (root / name / "checkpoints").glob("step_*"):
            shutil.rmtree(kept)
    return root


# --- running the readers --------------------------------------------------------------------------


@contextlib.contextmanager
def _deadline(seconds: int = HANG_SECONDS) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the reader did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _memory_cap(extra: int = 512 * 2**20) -> Iterator[None]:
    """Limit the address space to what the process maps now plus ``extra``."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _command(command: str, run: Path, tmp: Path) -> list[str]:
    return {
        "eval": ["eval", str(run), "--episodes", "2"],
        "resume": ["train", "--resume", str(run), "--steps", "512"],
        "plot": ["plot", str(run), "--out", str(tmp / "curves.png")],
    }[command]


def _refused(command: str, run: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``command`` on ``run``; assert exit 2 (InputError) and one line; return the line."""
    if command == "load":
        with _deadline(), pytest.raises(InputError) as info:
            pg.load(run)
        line = f"policygrad: error: {info.value}"
        assert "\n" not in line
        return line
    capsys.readouterr()
    with _deadline():
        code = main(_command(command, run, tmp))
    out, err = capsys.readouterr()
    assert code == 2, f"{command}: exit {code}\n{out}\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("policygrad: error: "), f"{command}: {err!r}"
    return lines[0]


# --- damaging a copy ----------------------------------------------------------------------------------


def _last(run: Path) -> Path:
    return run / "checkpoints" / "last"


def _record(run: Path) -> dict:
    return json.loads((_last(run) / "meta.json").read_text())


def _write_record(run: Path, record: dict) -> None:
    (_last(run) / "meta.json").write_text(json.dumps(record))


def _tensors_file(run: Path) -> Path:
    return _last(run) / _record(run)["tensors_file"]


def _meta(edit: Callable[[dict], Any]) -> Callable[[Path, Path], None]:
    """Damage the caller's meta (the ``meta`` of meta.json) in place."""

    def damage(run: Path, root: Path) -> None:
        record = _record(run)
        edit(record["meta"])
        _write_record(run, record)

    return damage


def _record_edit(edit: Callable[[dict], Any]) -> Callable[[Path, Path], None]:
    """Damage meta.json's record (library, format_version, tensors_file, ...) in place."""

    def damage(run: Path, root: Path) -> None:
        record = _record(run)
        edit(record)
        _write_record(run, record)

    return damage


def _resave(edit: Callable[[dict, dict], Any]) -> Callable[[Path, Path], None]:
    """Damage tensors and meta, then save a consistent checkpoint (hash and size match): only the
    validation of what it holds can refuse it."""

    def damage(run: Path, root: Path) -> None:
        tensors, meta = load_checkpoint(_last(run))
        edit(tensors, meta)
        save_checkpoint(_last(run), tensors, meta)

    return damage


def _config(edit: Callable[[dict], Any]) -> Callable[[Path, Path], None]:
    def damage(run: Path, root: Path) -> None:
        data = json.loads((run / "config.json").read_text())
        edit(data)
        (run / "config.json").write_text(json.dumps(data))

    return damage


def _replace(name: str, make: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    """Replace the file ``name`` (``config.json``, ``metrics.csv``, ``meta.json``, ``tensors``) of
    the run with what ``make(path, root)`` puts there."""

    def damage(run: Path, root: Path) -> None:
        path = {"meta.json": _last(run) / "meta.json", "tensors": None}.get(name, run / name)
        path = _tensors_file(run) if name == "tensors" else path
        path.unlink()
        make(path, root)

    return damage


def _fifo(path: Path, root: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path, root: Path) -> None:
    path.symlink_to("/dev/zero")


def _directory(path: Path, root: Path) -> None:
    path.mkdir()


def _symlink_outside(source: str) -> Callable[[Path, Path], None]:
    """A symlink to an intact copy of the file, outside the run directory."""

    def make(path: Path, root: Path) -> None:
        outside = root / "outside" / path.name
        outside.parent.mkdir(exist_ok=True)
        shutil.copy(root / "run" / source, outside)
        path.symlink_to(outside)

    return make


def _bytes(data: bytes) -> Callable[[Path, Path], None]:
    def make(path: Path, root: Path) -> None:
        path.write_bytes(data)

    return make


def _sparse(size: int, head: bytes = b"{") -> Callable[[Path, Path], None]:
    def make(path: Path, root: Path) -> None:
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(size)

    return make


def _tensors_symlink_inside(run: Path, root: Path) -> None:
    path = _tensors_file(run)
    shutil.move(path, run / "elsewhere.bin")
    path.symlink_to(run / "elsewhere.bin")


def _last_symlink_outside(run: Path, root: Path) -> None:
    outside = root / "outside-checkpoints" / run.name
    outside.parent.mkdir(exist_ok=True)
    shutil.move(_last(run), outside)
    _last(run).symlink_to(outside)


def _huge_sparse_tensors(run: Path, root: Path) -> None:
    record = _record(run)
    with open(_tensors_file(run), "r+b") as f:
        f.truncate(MAX_TENSORS_BYTES + 1)
    record["tensors_bytes"] = MAX_TENSORS_BYTES + 1
    _write_record(run, record)


def _truncate_tensors(run: Path, root: Path) -> None:
    path = _tensors_file(run)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _duplicate_key(run: Path, root: Path) -> None:
    text = (_last(run) / "meta.json").read_text()
    (_last(run) / "meta.json").write_text(text.replace('"library": "policygrad",', '"library": "policygrad", "library": "policygrad",', 1))


def _duplicate_config_key(run: Path, root: Path) -> None:
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text.replace('"algo": "ppo",', '"algo": "ppo", "algo": "a2c",', 1))


def _cut(name: str) -> Callable[[Path, Path], None]:
    def damage(run: Path, root: Path) -> None:
        path = _last(run) / "meta.json" if name == "meta.json" else run / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return damage


def _other_env(run: Path, root: Path) -> None:
    shutil.rmtree(_last(run))
    shutil.copytree(_last(root / "other"), _last(run))


def _optim(meta: dict) -> dict:
    return meta["algorithm"]["optimizer"]


def _group(meta: dict) -> dict:
    return _optim(meta)["param_groups"][0]


def _optim_state0(meta: dict) -> dict:
    return _optim(meta)["state"]["__items__"][0][1]


def _swap(tensors: dict, meta: dict) -> None:
    a, b = "policy.actor.net.layers.0.weight", "policy.actor.net.layers.1.weight"
    tensors[a], tensors[b] = tensors[b], tensors[a]


def _drop_state_entry(tensors: dict, meta: dict) -> None:
    del _optim_state0(meta)["exp_avg_sq"]
    del tensors["algo.optim.state.0.exp_avg_sq"]


def _set_tensor(name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, meta: dict) -> None:
        tensors[name] = make(tensors[name])

    return edit


def _with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


def _with_inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("inf")
    return t


def _metrics_long_line(path: Path, root: Path) -> None:
    path.write_text("step,episode_return_mean\n" + "1," + "9" * (2**20) + "\n")


def _metrics_foreign_columns(path: Path, root: Path) -> None:
    path.write_text("when,what\n1,2\n")


# --- the cases --------------------------------------------------------------------------------------

ALL = ("eval", "resume", "load")
FIT = ("resume", "load")  # what only restoring into a live optimiser, scaler or generator can check
METRICS = ("resume", "plot")


@dataclass(frozen=True)
class Case:
    name: str
    damage: Callable[[Path, Path], None]
    match: str
    commands: tuple[str, ...] = ALL
    base: str = "run"
    capped: bool = False  # a regression would read without end: run under the memory cap


CASES = [
    # what is there in place of a file
    Case("tensors-fifo", _replace("tensors", _fifo), "is a FIFO"),
    Case("meta-fifo", _replace("meta.json", _fifo), "is a FIFO"),
    Case("config-fifo", _replace("config.json", _fifo), "is a FIFO", (*ALL, "plot")),
    Case("metrics-fifo", _replace("metrics.csv", _fifo), "is a FIFO", METRICS),
    Case("tensors-dev-zero", _replace("tensors", _dev_zero), "is a symlink", capped=True),
    Case("config-dev-zero", _replace("config.json", _dev_zero), "is a symlink", (*ALL, "plot"), capped=True),
    Case("metrics-dev-zero", _replace("metrics.csv", _dev_zero), "is a symlink", METRICS, capped=True),
    Case("tensors-symlink-inside", _tensors_symlink_inside, "is a symlink"),
    Case("meta-symlink-outside", _replace("meta.json", _symlink_outside("checkpoints/last/meta.json")), "is a symlink"),
    Case("config-symlink-outside", _replace("config.json", _symlink_outside("config.json")), "is a symlink"),
    Case("metrics-symlink-outside", _replace("metrics.csv", _symlink_outside("metrics.csv")), "is a symlink", METRICS),
    Case("tensors-directory", _replace("tensors", _directory), "is a directory"),
    Case("config-directory", _replace("config.json", _directory), "is a directory"),
    Case("metrics-directory", _replace("metrics.csv", _directory), "is a directory", METRICS),
    Case("checkpoint-symlink-outside", _last_symlink_outside, "lies outside"),
    Case("lock-fifo", _replace(".lock", _fifo), ".lock is not a regular file", ("resume",)),
    # sizes
    Case("meta-300MB", _replace("meta.json", _sparse(SPARSE)), "too large", capped=True),
    Case("config-300MB", _replace("config.json", _sparse(SPARSE)), "too large", (*ALL, "plot"), capped=True),
    Case("metrics-300MB", _replace("metrics.csv", _sparse(SPARSE, b"step\n")), "too large", METRICS, capped=True),
    Case("metrics-1MB-line", _replace("metrics.csv", _metrics_long_line), "line longer than", METRICS, capped=True),
    Case("tensors-over-the-cap", _huge_sparse_tensors, "declares a tensors file of", capped=True),
    Case("tensors-bytes-huge", _record_edit(lambda r: r.update(tensors_bytes=10**18)), "declares a tensors file of"),
    Case("tensors-bytes-negative", _record_edit(lambda r: r.update(tensors_bytes=-1)), "corrupt"),
    Case("tensors-bytes-too-many", _record_edit(lambda r: r.update(tensors_bytes=r["tensors_bytes"] + 10)),
         "truncated"),
    Case("tensors-truncated", _truncate_tensors, "truncated"),
    # JSON
    Case("meta-nested-100k", _replace("meta.json", _bytes(_nested(100_000))), "nested 100000 deep", capped=True),
    Case("config-nested-100k", _replace("config.json", _bytes(_nested(100_000))), "nested 100000 deep",
         (*ALL, "plot"), capped=True),
    Case("meta-not-utf8", _replace("meta.json", _bytes(b'{"library": "policygrad\xff"}')), "not UTF-8"),
    Case("config-not-utf8", _replace("config.json", _bytes(b'{"algo": "\xc3\x28"}')), "not UTF-8"),
    Case("meta-duplicate-key", _duplicate_key, "'library' appears twice"),
    Case("config-duplicate-key", _duplicate_config_key, "'algo' appears twice"),
    Case("meta-truncated", _cut("meta.json"), "not valid JSON"),
    Case("meta-empty", _replace("meta.json", _bytes(b"")), "not valid JSON"),
    Case("config-truncated", _cut("config.json"), "not valid JSON"),
    Case("meta-a-list", _replace("meta.json", _bytes(b"[1, 2]")), "does not name the library"),
    Case("format-version-a-string", _record_edit(lambda r: r.update(format_version="1")), "format version '1'"),
    Case("tensors-file-escapes", _record_edit(lambda r: r.update(tensors_file="../../etc/passwd")), "corrupt"),
    Case("tensors-file-absolute", _record_edit(lambda r: r.update(tensors_file="/etc/passwd")), "corrupt"),
    # config.json
    Case("config-missing-train", _config(lambda d: d.pop("train")), "not a policygrad run configuration"),
    Case("config-a-list", _replace("config.json", _bytes(b"[]")), "not a policygrad run configuration"),
    Case("config-nan", _config(lambda d: d["config"].update(learning_rate=float("nan"))), "learning_rate is NaN"),
    Case("config-seed-huge", _config(lambda d: d["config"].update(seed=10**30)), "64-bit"),
    Case("config-hidden-sizes-huge", _config(lambda d: d["config"].update(hidden_sizes=[100_000, 100_000])),
         "hidden_sizes"),
    Case("config-env-not-a-string", _config(lambda d: d.update(env=["CartPole-v1"])), "env must be a string"),
    # counters and kinds
    Case("step-negative", _meta(lambda m: m.update(step=-1)), "step -1 is out of range"),
    Case("step-a-string", _meta(lambda m: m.update(step="256")), "not a policygrad training checkpoint"),
    Case("step-nan", _meta(lambda m: m.update(step=float("nan"))), "not a policygrad training checkpoint"),
    Case("wall-time-infinite", _meta(lambda m: m.update(wall_time=float("inf"))), "wall_time"),
    Case("wall-time-negative", _meta(lambda m: m.update(wall_time=-3.0)), "wall_time"),
    Case("kind-wrong", _meta(lambda m: m.update(kind="something")), "not a policygrad training checkpoint"),
    Case("missing-rng", _meta(lambda m: m.pop("rng")), "random-generator state"),
    Case("missing-algorithm", _meta(lambda m: m.pop("algorithm")), "algorithm state is missing"),
    Case("updates-negative", _meta(lambda m: m["algorithm"].update(updates=-2)), "update counter"),
    Case("kl-beta-infinite", _meta(lambda m: m["algorithm"].update(kl_beta=float("inf"))),
         "algorithm.kl_beta is not a finite number"),
    Case("another-env", _other_env, "Acrobot-v1"),
    # optimiser settings and state
    Case("betas-evil", _meta(lambda m: _group(m).update(betas="evil")), "betas must be two numbers"),
    Case("lr-negative", _meta(lambda m: _group(m).update(lr=-1.0)), "lr must be"),
    Case("lr-a-string", _meta(lambda m: _group(m).update(lr="fast")), "lr must be"),
    Case("eps-zero", _meta(lambda m: _group(m).update(eps=0)), "eps must be"),
    Case("weight-decay-negative", _meta(lambda m: _group(m).update(weight_decay=-0.1)), "weight_decay must be"),
    Case("weight-decay-torch", _meta(lambda m: _group(m).update(weight_decay=float("nan"))), "weight_decay",
         base="torch"),
    Case("amsgrad-on", _meta(lambda m: _group(m).update(amsgrad=True)), "amsgrad=True", FIT),
    Case("amsgrad-on-torch", _meta(lambda m: _group(m).update(amsgrad=True)), "amsgrad=True", FIT, base="torch"),
    Case("unknown-setting", _meta(lambda m: _group(m).update(nesterov=True)), "'nesterov'", FIT),
    Case("params-short", _meta(lambda m: _group(m)["params"].pop()), "state 11 is of no parameter"),
    Case("step-count-fractional", _resave(_set_tensor("algo.optim.state.0.step", lambda t: t + 0.5)),
         "whole number of steps"),
    Case("moment-nan", _resave(_set_tensor("algo.optim.state.0.exp_avg", _with_nan)), "exp_avg' holds NaN"),
    Case("moment-nan-torch", _resave(_set_tensor("algo.optim.state.0.exp_avg", _with_nan)), "exp_avg' holds NaN",
         base="torch"),
    Case("square-negative", _resave(_set_tensor("algo.optim.state.0.exp_avg_sq", lambda t: t - 1)), "negative"),
    Case("moment-transposed", _resave(_set_tensor("algo.optim.state.0.exp_avg", lambda t: t.T.contiguous())),
         "shape", FIT),
    Case("moment-transposed-torch", _resave(_set_tensor("algo.optim.state.0.exp_avg", lambda t: t.T.contiguous())),
         "shape", FIT, base="torch"),
    Case("state-entry-missing", _resave(_drop_state_entry), "the optimizer keeps", FIT),
    # generators
    Case("numpy-pos-out-of-range", _meta(lambda m: m["rng"]["numpy"].update(pos=10**6)), "numpy pos"),
    Case("numpy-pcg64", _meta(lambda m: m["rng"]["numpy"].update(bit_generator="PCG64")), "bit_generator"),
    Case("numpy-key-zero", _resave(_set_tensor("rng.numpy.key", torch.zeros_like)), "all-zero"),
    Case("numpy-key-negative", _resave(_set_tensor("rng.numpy.key", lambda t: t - 2**40)), "outside"),
    Case("python-index-out-of-range", _resave(_set_tensor("rng.python.state", lambda t: torch.cat([t[:-1], t.new_tensor([10**6])]))), "index"),
    Case("python-word-negative", _resave(_set_tensor("rng.python.state", lambda t: -t)), "outside"),
    Case("python-version-2", _meta(lambda m: m["rng"]["python"].update(version=2)), "python version"),
    Case("python-gauss-evil", _meta(lambda m: m["rng"]["python"].update(gauss_next="evil")), "gauss_next"),
    Case("torch-rng-float", _resave(_set_tensor("rng.torch", lambda t: t.double())), "rng.torch"),
    # the policy
    Case("weight-nan", _resave(_set_tensor("policy.actor.net.layers.0.weight", _with_nan)),
         "'policy.actor.net.layers.0.weight' holds NaN"),
    Case("weight-inf", _resave(_set_tensor("policy.critic.net.layers.2.bias", _with_inf)),
         "'policy.critic.net.layers.2.bias' holds NaN or infinite"),
    Case("weights-swapped", _resave(_swap), "shape"),
    Case("weight-missing", _resave(lambda t, m: t.pop("policy.actor.net.layers.2.bias")), "missing"),
    Case("weight-int64", _resave(_set_tensor("policy.actor.net.layers.0.bias", lambda t: t.long())), "dtype"),
    Case("extra-tensor", _resave(lambda t, m: t.update(junk=torch.zeros(3))), "'junk' of no part of a run"),
    # normalisers
    Case("obs-var-negative", _resave(_set_tensor("obs_norm.var", lambda t: -t)), "non-finite or negative"),
    Case("obs-count-infinite", _meta(lambda m: m["obs_norm"].update(count=float("inf"))), "count"),
    Case("obs-mean-shape", _resave(lambda t, m: t.update({"obs_norm.mean": torch.zeros(3, dtype=torch.float64),
                                                          "obs_norm.var": torch.ones(3, dtype=torch.float64)})),
         "shape", ("eval", "resume", "load")),
    Case("reward-scaler-missing", _meta(lambda m: m.update(reward_norm=None)), "reward scaler", FIT),
    # metrics.csv
    Case("metrics-not-utf8", _replace("metrics.csv", _bytes(b"step,episode_return_mean\n1,\xff\n")), "not UTF-8",
         METRICS),
    Case("metrics-foreign-columns", _replace("metrics.csv", _metrics_foreign_columns), "'step'", METRICS),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_damaged_run_is_refused_in_one_line(case: Case, runs: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs / case.base, run, symlinks=True)
    case.damage(run, runs)
    for command in case.commands:
        with _memory_cap() if case.capped else contextlib.nullcontext():
            line = _refused(command, run, tmp_path, capsys)
        assert re.search(re.escape(case.match), line), f"{command}: {line}"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def test_the_intact_run_passes_every_reader(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control: what the cases damage is read without complaint when intact."""
    for base in ("run", "torch"):
        run = tmp_path / base
        shutil.copytree(runs / base, run)
        assert main(_command("eval", run, tmp_path)) == 0
        assert main(_command("plot", run, tmp_path)) == 0
        pg.load(run)
        assert main([*_command("resume", run, tmp_path), "--quiet"]) == 0
    capsys.readouterr()


def test_a_message_quoting_a_name_stays_one_line(runs: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run\nsecond line \x1b[31mred\u202e"
    shutil.copytree(runs / "run", run)
    _meta(lambda m: m.update(step=-1))(run, runs)
    for command in ALL:
        line = _refused(command, run, tmp_path, capsys)
        assert "\\n" in line and "\\x1b" in line and "\\u202e" in line


# --- writing into a received run (train --resume) -------------------------------------------------


def test_resume_writes_through_no_planted_symlink(runs: Path, tmp_path: Path) -> None:
    """A resumed run writes its temporary files (checkpoint, config.json, metrics.csv, the
    learning curve) under names a received directory may already hold, as symlinks to files
    elsewhere; those files stay as they were."""
    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    pid = os.getpid()
    for planted in (_last(run) / f"meta.json.tmp-{pid}", run / f"metrics.csv.tmp-{pid}",
                    run / f".learning_curve.png.tmp-{pid}", run / f"config.json.tmp-{pid}"):
        planted.symlink_to(victim)
    with _deadline():
        assert main(["train", "--resume", str(run), "--steps", "512", "--eval-every", "128", "--quiet"]) == 0
    assert victim.read_text() == "precious\n"
    assert _record(run)["meta"]["step"] == 512


def test_a_directory_where_the_learning_curve_goes_is_a_note(runs: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    (run / "learning_curve.png").unlink()
    (run / "learning_curve.png").mkdir()
    capsys.readouterr()
    with _deadline():
        assert main(["train", "--resume", str(run), "--steps", "512", "--quiet"]) == 0
    assert main(["plot", str(run), "--out", str(run / "learning_curve.png")]) == 2
    err = capsys.readouterr().err.splitlines()  # --quiet: the resume's note about the curve is not printed
    assert len(err) == 1 and err[0].startswith("policygrad: error: cannot write image"), err


def test_resume_refuses_a_planted_checkpoint_symlink(runs: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A symlink where a later kept checkpoint goes, to a checkpoint elsewhere: the run stops
    there (exit 1, one line) and the checkpoint elsewhere is untouched."""
    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(_last(runs / "run"), elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    for step in range(257, 512):
        (run / "checkpoints" / f"step_{step}").symlink_to(elsewhere)
    capsys.readouterr()
    with _deadline():
        code = main(["train", "--resume", str(run), "--steps", "512", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and "is a symlink" in err, err
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_resume_reads_the_newest_checkpoint_that_loads_and_no_other(runs: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints are tried newest first by the step their meta.json names: a damaged newer one
    is skipped, and older ones are not read at all."""
    import policygrad.training

    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    for step in (64, 128, 192):
        tensors, meta = load_checkpoint(_last(run))
        save_checkpoint(run / "checkpoints" / f"step_{step}", tensors, {**meta, "step": step})
    tensors, meta = load_checkpoint(_last(run))
    save_checkpoint(run / "checkpoints" / "step_999", tensors, {**meta, "step": 999})
    damaged = run / "checkpoints" / "step_999"
    name = json.loads((damaged / "meta.json").read_text())["tensors_file"]
    (damaged / name).write_bytes((damaged / name).read_bytes()[:100])
    loaded: list[str] = []
    real = policygrad.training.load_run_checkpoint

    def counting(path: Path, run_dir: Path | None = None) -> Any:
        loaded.append(Path(path).name)
        return real(path, run_dir)

    monkeypatch.setattr(policygrad.training, "load_run_checkpoint", counting)
    with _deadline():
        assert main(["train", "--resume", str(run), "--steps", "256", "--quiet"]) == 0  # trained already
    assert loaded == ["step_999", "last"]


def test_event_files_from_the_future_do_not_stall_a_resume(tmp_path: Path) -> None:
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / f"events.out.tfevents.{int(time.time()) + 10**6}.host.1.0").write_bytes(b"")
    (tmp_path / "tb" / f"events.out.tfevents.{'9' * 200}.host.1.0").write_bytes(b"")
    with _deadline(20):
        MetricsLogger(tmp_path, ["step"], tensorboard=True, resume=True, resume_step=0).close()


# --- JSON ------------------------------------------------------------------------------------------


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'["[[[[", "\\"[[[", "\\\\", [["\\\\\\"]]]"]]]') == 3
    assert json_depth(b"") == 0
    assert json_depth(b'"unterminated [[[[') == 0


def test_parse_json_refuses_depth_duplicates_and_bad_text() -> None:
    parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, "x")
    with pytest.raises(InputError, match=f"nested {MAX_JSON_DEPTH + 1} deep"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "x")
    with pytest.raises(InputError, match="'a' appears twice"):
        parse_json(b'{"b": {"a": 1, "a": 2}}', "x")
    with pytest.raises(InputError, match="not UTF-8"):
        parse_json(b'"\xff"', "x")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_json(b"1" * 5000, "x")  # more digits than Python converts
    assert parse_json(b"NaN", "x") != parse_json(b"NaN", "x")  # NaN parses; each field's check decides


# --- memory, measured in a fresh interpreter -------------------------------------------------------

_MEASURE = r"""
import json, resource, sys, time
from policygrad.cli import main
import policygrad.plots
main(["eval", sys.argv[1], "--episodes", "1"])  # imports and first allocations of an eval, on an intact run
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = []
for args in json.loads(sys.argv[2]):
    t = time.perf_counter()
    code = main(args)
    results.append({"args": args, "code": code, "seconds": time.perf_counter() - t,
                    "extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_the_worst_files_take_little_time_and_memory(runs: Path, tmp_path: Path) -> None:
    """/dev/zero, 300 MB and 100k-deep files, and a sparse tensors file over the cap, in a fresh
    interpreter under an address-space limit: each refused with exit 2 at under 200 MB above the
    interpreter's own (ru_maxrss)."""
    commands = []
    for case in [c for c in CASES if c.capped]:
        run = tmp_path / case.name
        shutil.copytree(runs / case.base, run)
        case.damage(run, runs)
        commands += [_command(command, run, tmp_path) for command in case.commands if command != "load"]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(pg.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(runs / "run"), json.dumps(commands)],
                          capture_output=True, text=True,
                          timeout=300, preexec_fn=limit, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert len(results) == len(commands)
    for result in results:
        assert result["code"] == 2, result
        assert result["extra_mb"] < 200, result
    assert METRICS_MAX_BYTES < SPARSE
