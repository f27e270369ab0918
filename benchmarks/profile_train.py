"""Where `policygrad train` spends its time: a profile of the main job, grouped by stage.

Runs ``policygrad train ARGS --quiet`` in this process under cProfile (after timing the imports
without it), and writes a table of stages: the imports, building the session, and inside the
training loop the environment steps, acting, the rest of rollout collection, the update (forward,
backward, optimiser step, the rest), logging, checkpoints, evaluations and the learning-curve
plot. The unprofiled wall time of the same command, in a fresh process, is measured first.

    python benchmarks/profile_train.py --out benchmarks/results/profile.md
    python benchmarks/profile_train.py --out /tmp/p.md -- --algo a2c --steps 100000

cProfile adds a cost per Python call, so stages made of many small Python calls look somewhat
larger than they are; the shares are a map, not a stopwatch.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit  # this directory's module (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parents[1]

# (stage, [(file suffix, function name[, caller])]): cumulative time of these functions, summed.
_COLLECT = ("rollout.py", "collect")
STAGES = [
    ("environment steps", [("rollout.py", "step", _COLLECT)]),
    ("acting (policy forward + sampling, NumPy)", [("backends/numpy.py", "act", _COLLECT)]),
    ("update: forward (log π, H, V)", [("backends/numpy.py", "evaluate")]),
    ("update: backward (chain rule)", [("backends/numpy.py", "_backward")]),
    ("update: gradient clipping", [("backends/numpy.py", "_clip")]),
    ("update: optimiser step", [("backends/numpy.py", "step", ("backends/numpy.py", "step"))]),
    ("update: GAE", [("base.py", "_gae")]),
    ("logging (metrics.csv, TensorBoard)", [("logging.py", "log")]),
    ("checkpoints", [("checkpoint.py", "save_checkpoint")]),
    ("evaluations", [("training.py", "evaluate_session")]),
    ("learning-curve plot", [("plots.py", "plot_learning_curve")]),
]
TOTALS = {
    "train": ("cli.py", "main_train"),
    "loop": ("training.py", "train"),
    "collect": ("rollout.py", "collect"),
    "update": ("base.py", "update"),
}


def _matches(key: tuple, suffix: str, name: str) -> bool:
    return key[2] == name and key[0].endswith(os.sep + suffix)


def _cumulative(stats: pstats.Stats, suffix: str, name: str, caller: tuple[str, str] | None = None) -> float:
    """Cumulative seconds of the function ``name`` in a file ending in ``suffix``; with ``caller``,
    only of its calls from that function."""
    total = 0.0
    for key, (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not _matches(key, suffix, name):
            continue
        if caller is None:
            total += ct
        else:
            total += sum(entry[3] for who, entry in callers.items() if _matches(who, *caller))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("train_args", nargs="*", help="arguments of `policygrad train` (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        command = ["train", *args.train_args, "--quiet", "--out"]
        exe = str(Path(sys.executable).with_name("policygrad"))
        t0 = time.perf_counter()
        subprocess.run([exe, *command, str(Path(tmp) / "wall")], check=True, capture_output=True)
        wall = time.perf_counter() - t0

        t0 = time.perf_counter()
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        import policygrad.cli as cli
        import policygrad.training  # noqa: F401

        imports = time.perf_counter() - t0
        profiler = cProfile.Profile()
        profiler.enable()
        code = cli.main([*command, str(Path(tmp) / "profiled")])
        profiler.disable()
        if code:
            raise SystemExit(f"policygrad train exited with {code}")
    stats = pstats.Stats(profiler)
    totals = {key: _cumulative(stats, *where) for key, where in TOTALS.items()}
    profiled = imports + totals["train"]
    rows = [("imports (torch, gymnasium, policygrad), unprofiled", imports)]
    stages = {name: sum(_cumulative(stats, *w) for w in where) for name, where in STAGES}
    setup = totals["train"] - totals["loop"] - stages["learning-curve plot"]
    rows.append(("building the run (config, environments, policy) and writing config.json", setup))
    collect_rest = totals["collect"] - stages["environment steps"] - stages["acting (policy forward + sampling, NumPy)"]
    update_parts = [k for k in stages if k.startswith("update:")]
    update_rest = totals["update"] - sum(stages[k] for k in update_parts)
    for name, seconds in stages.items():
        rows.append((name, seconds))
        if name.startswith("acting"):
            rows.append(("rollout collection, the rest (buffers, checks, bootstrap values)", collect_rest))
        if name == update_parts[-1]:
            rows.append(("update: the rest (batching, shuffles, losses, metrics, checks)", update_rest))
    loop_rest = totals["loop"] - totals["collect"] - totals["update"] - sum(
        stages[k] for k in ("logging (metrics.csv, TensorBoard)", "checkpoints", "evaluations")
    )
    rows.append(("training loop, the rest (progress, bookkeeping)", loop_rest))

    title = "policygrad train " + " ".join(args.train_args) if args.train_args else "policygrad train"
    lines = [
        f"# Where `{title}` spends its time",
        "",
        f"Whole process, unprofiled (fresh process, `{title} --quiet`): **{wall:.2f} s**. Under cProfile "
        f"(imports timed without it): {profiled:.2f} s, split by stage below. {os.cpu_count()} CPUs; "
        f"produced by `python benchmarks/profile_train.py{' -- ' + ' '.join(args.train_args) if args.train_args else ''}`.",
        "",
        "| stage | s | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {seconds:.2f} | {seconds / profiled:.0%} |" for name, seconds in rows]
    lines += ["", "The ten functions with the most time of their own:", "", "```"]
    buffer = _StatsText()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(10)
    lines += [line for line in buffer.text().splitlines() if line.strip() and "function calls" not in line][-11:]
    lines += ["```", ""]
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


class _StatsText:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return "".join(self.parts).replace(str(ROOT) + os.sep, "")


if __name__ == "__main__":
    sys.exit(main())
