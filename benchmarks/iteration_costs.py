"""What one collect-and-update cycle costs, part by part, against the environment floor.

Trains one case of ``benchmarks/speed.py`` in this process with a timer around each part of the
loop (rollout collection, environment steps, acting, the update and its pieces, logging), then
steps the same vector environment with random actions for as many steps (the floor), and prints
microseconds per iteration (one rollout and one update). The timers wrap Python calls, so they
add about a microsecond per call: the parts are a map, the floor ratio a slight overestimate.

    python benchmarks/iteration_costs.py a2c_sb3_default
    python benchmarks/iteration_costs.py ppo_8x128 --seed 1 --out /tmp/ppo.md

Nested rows are included in the rows above them (``update`` holds ``optimise``, which holds
``forward`` and ``backward``). Evaluations (the final one) are not counted.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402  (this directory's runner: the cases)
from report import emit  # noqa: E402

# (label, module or class, attribute): the parts timed, in the order printed.
_PARTS: list[tuple[str, str, str]] = [
    ("rollout collection", "collector", "collect"),
    ("  environment steps", "policygrad.rollout.EnvStepper", "step"),
    ("  acting (NumPy forward + sampling)", "policygrad.backends.numpy.NumpyBackend", "act"),
    ("update", "algorithm", "update"),
    ("  Ψ and targets (GAE)", "algorithm", "weigh"),
    ("  flatten the rollout", "policygrad.algorithms.base", "flatten_rollout"),
    ("  optimise", "algorithm", "optimise"),
    ("    forward (log π, H, V)", "policygrad.backends.numpy.NumpyBackend", "evaluate"),
    ("    backward", "policygrad.backends.numpy.NumpyBackend", "_backward"),
    ("    gradient clipping", "policygrad.backends.numpy.NumpyBackend", "_clip"),
    ("    optimiser step", "policygrad.backends.numpy.NumpyOptimizer", "step"),
    ("  explained variance", "policygrad.algorithms.base", "explained_variance"),
    ("metrics row (metrics.csv, TensorBoard)", "policygrad.logging.MetricsLogger", "log"),
]


def _resolve(name: str, session: Any) -> Any:
    if name == "collector":
        return session.collector
    if name == "algorithm":
        return session.algorithm
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:  # module.Class: import the module, then the class
        return getattr(importlib.import_module(module.rpartition(".")[0]), module.rpartition(".")[2]).__dict__[attr]


_PAUSED = [False]  # True during evaluations


def _timed(f: Callable, label: str, totals: dict[str, float], counts: dict[str, int]) -> Callable:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _PAUSED[0]:
            return f(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t0
            counts[label] += 1

    return wrapper


def _paused(f: Callable) -> Callable:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _PAUSED[0] = True
        try:
            return f(*args, **kwargs)
        finally:
            _PAUSED[0] = False

    return wrapper


def measure(case_name: str, seed: int, steps: int | None = None) -> tuple[list[tuple[str, float, int]], int, float, float]:
    """``(rows (label, µs per iteration, calls), iterations, training s, floor s)`` for the case's
    step count or ``steps``."""
    import policygrad.training
    from policygrad.runconfig import resolve_run
    from policygrad.training import build_session, train

    case = speed.CASES[case_name]
    spec = resolve_run(case.algo, case.env, overrides=dict(case.policygrad, num_envs=case.num_envs,
                                                           total_steps=steps or case.steps, seed=seed))
    session = build_session(spec)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    undo = []
    for label, owner_name, attr in _PARTS:
        owner = _resolve(owner_name, session)
        original = getattr(owner, attr)
        setattr(owner, attr, _timed(original, label, totals, counts))
        undo.append((owner, attr, original))
    undo.append((policygrad.training, "evaluate_session", policygrad.training.evaluate_session))
    policygrad.training.evaluate_session = _paused(policygrad.training.evaluate_session)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            train(session, Path(run_dir), quiet=True)
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)
        session.close()
    iterations = counts["update"]
    floor = speed.work_floor(case, seed, session.step)["train_seconds"]
    rows = [(label, totals[label] / iterations * 1e6, counts[label]) for label, _, _ in _PARTS]
    return rows, iterations, session.wall_time, floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=list(speed.CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: the case's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows, iterations, seconds, floor = measure(args.case, args.seed, args.steps)
    per_iteration = seconds / iterations * 1e6
    floor_per_iteration = floor / iterations * 1e6
    lines = [
        f"`python benchmarks/iteration_costs.py {args.case} --seed {args.seed}"
        f"{f' --steps {args.steps}' if args.steps else ''}`: {iterations} iterations, "
        f"training {seconds:.2f} s ({per_iteration:.0f} µs per iteration), environment floor {floor:.2f} s "
        f"({floor_per_iteration:.0f} µs per iteration), ratio {seconds / floor:.2f}×.",
        "",
        "| part | µs per iteration | calls |",
        "|---|---:|---:|",
    ]
    lines += [f"| {'· ' * ((len(label) - len(label.lstrip())) // 2)}{label.strip()} | {us:.0f} | {calls} |"
              for label, us, calls in rows]
    text = "\n".join(lines) + "\n"
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
