"""Learning benchmark: train every preset over several seeds and tabulate the final returns.

Each run is a subprocess ``policygrad train --algo A --env E --seed S --quiet --out DIR`` followed by
``policygrad eval DIR --deterministic --episodes 20 --json``. The median over seeds of the mean
evaluation return is compared with the target the preset is meant to reach and with the RL
Baselines3 Zoo's published figure (one run at the Zoo's own budget, ``benchmark.md``).

Results accumulate in ``benchmarks/results/learning.json`` (one entry per algorithm, environment
and step budget, replaced when re-run) and the markdown table ``benchmarks/results/learning.md``
is rebuilt from all of them, so subsets can be run at different times.

Examples::

    python benchmarks/learning.py                                  # every classic-control preset
    python benchmarks/learning.py --algos ppo --envs CartPole-v1   # one case
    python benchmarks/learning.py --steps-scale 0.1 --seeds 1      # a quick smoke run
    python benchmarks/learning.py --envs Hopper-v5 --jobs 2        # MuJoCo (needs policygrad[mujoco])
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from policygrad.algorithms import ALGORITHMS, PRESETS

RESULTS = Path(__file__).resolve().parent / "results"
CLASSIC = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0")

TARGETS: dict[tuple[str, str], float] = {
    # (algo, env): the median deterministic return the preset is meant to reach at its budget.
    ("ppo", "CartPole-v1"): 500.0,
    ("a2c", "CartPole-v1"): 475.0,
    ("trpo", "CartPole-v1"): 475.0,
    ("reinforce", "CartPole-v1"): 475.0,
    ("ppo", "Acrobot-v1"): -90.0,
    ("ppo", "Pendulum-v1"): -200.0,
    ("trpo", "Pendulum-v1"): -200.0,
    ("ppo", "MountainCarContinuous-v0"): 85.0,
    # IMPALA in one process: the PPO preset's measured median return (benchmarks/results/learning.md).
    ("impala", "CartPole-v1"): 500.0,
    ("impala", "Pendulum-v1"): -178.0,
    # MuJoCo, 1M steps: the best published PPO figure at 1M steps (PPO paper, Fig. 3; the Zoo's
    # tuned agents on the v3 environments), whichever is higher.
    ("ppo", "Hopper-v5"): 2410.0,
    ("ppo", "Walker2d-v5"): 3479.0,
    ("ppo", "HalfCheetah-v5"): 1800.0,
}

ZOO: dict[tuple[str, str], tuple[float, str]] = {
    # RL Baselines3 Zoo benchmark.md: mean return of one trained agent, and its training budget.
    # Its Pendulum and MountainCarContinuous agents use gSDE; its MuJoCo figures are for v3.
    ("ppo", "CartPole-v1"): (500.0, "100k"),
    ("ppo", "Acrobot-v1"): (-73.5, "1M"),
    ("ppo", "Pendulum-v1"): (-172.2, "100k"),
    ("ppo", "MountainCarContinuous-v0"): (88.3, "20k"),
    ("ppo", "HalfCheetah-v5"): (5819.1, "1M"),
    ("ppo", "Hopper-v5"): (2410.4, "1M"),
    ("ppo", "Walker2d-v5"): (3478.8, "1M"),
    ("a2c", "CartPole-v1"): (500.0, "500k"),
    ("a2c", "Acrobot-v1"): (-83.4, "500k"),
    ("a2c", "Pendulum-v1"): (-163.0, "1M"),
    ("a2c", "MountainCarContinuous-v0"): (91.2, "100k"),
    ("a2c", "HalfCheetah-v5"): (3041.2, "1M"),
    ("a2c", "Hopper-v5"): (733.5, "1M"),
    ("trpo", "CartPole-v1"): (500.0, "100k"),
    ("trpo", "Acrobot-v1"): (-83.1, "100k"),
    ("trpo", "Pendulum-v1"): (-174.6, "100k"),
    ("trpo", "MountainCarContinuous-v0"): (92.5, "50k"),
    ("trpo", "HalfCheetah-v5"): (1785.5, "1M"),
    ("trpo", "Hopper-v5"): (3618.4, "1M"),
    ("trpo", "Walker2d-v5"): (4933.1, "1M"),
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _mean_return(payload: dict) -> float:
    for key in ("mean_return", "return_mean", "mean", "episode_return_mean"):
        if key in payload:
            return float(payload[key])
    raise KeyError(f"no mean return in eval output {payload}")


def run_one(algo: str, env: str, seed: int, steps: int, runs_dir: Path) -> dict:
    """Train and evaluate one seed; returns its result (or the error)."""
    out = runs_dir / f"{algo}-{env}-s{seed}"
    cli = [sys.executable, "-m", "policygrad.cli"]
    start = time.perf_counter()
    train = _run(cli + ["train", "--algo", algo, "--env", env, "--seed", str(seed), "--steps", str(steps),
                        "--quiet", "--out", str(out)])
    wall = time.perf_counter() - start
    if train.returncode != 0:
        return {"seed": seed, "error": (train.stderr or train.stdout).strip().splitlines()[-1:], "wall_s": wall}
    evaluation = _run(cli + ["eval", str(out), "--deterministic", "--episodes", "20", "--json"])
    if evaluation.returncode != 0:
        return {"seed": seed, "error": (evaluation.stderr or evaluation.stdout).strip().splitlines()[-1:],
                "wall_s": wall}
    return {"seed": seed, "return": _mean_return(json.loads(evaluation.stdout)), "wall_s": wall}


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _steps_label(steps: int) -> str:
    return f"{steps // 1000}k" if steps % 1000 == 0 else str(steps)


def render(entries: list[dict]) -> str:
    """The markdown table of all entries, sorted by environment then algorithm."""
    lines = [
        "# Learning results",
        "",
        "Median over seeds of the mean return of 20 deterministic evaluation episodes after training "
        "with each preset (`policygrad train` + `policygrad eval --deterministic --episodes 20`). "
        "Wall time is the median per training run (whole `policygrad train` process), with the "
        "machine's CPU count and the number of runs sharing it at a time in the last column. "
        "Zoo: RL Baselines3 Zoo benchmark figure (one run, at the budget given; gSDE for its "
        "Pendulum and MountainCarContinuous agents). Produced by `benchmarks/learning.py`.",
        "",
        "| algo | env | steps | seeds | median | min–max | target | Zoo | wall time (s) | measured (cpus, jobs) |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---|",
    ]
    order = {env: i for i, env in enumerate(CLASSIC)}
    key = lambda e: (order.get(e["env"], 99), e["env"], ALGORITHMS.index(e["algo"]), e["steps"])  # noqa: E731
    for e in sorted(entries, key=key):
        returns = [r["return"] for r in e["runs"] if "return" in r]
        walls = [r["wall_s"] for r in e["runs"] if "return" in r]
        failed = len(e["runs"]) - len(returns)
        median = _fmt(statistics.median(returns)) if returns else "failed"
        spread = f"{_fmt(min(returns))} – {_fmt(max(returns))}" if returns else ""
        if failed:
            spread += f" ({failed} failed)"
        target = TARGETS.get((e["algo"], e["env"]))
        target_txt = "" if target is None else f"≥ {_fmt(target)}"
        if target is not None and returns and e.get("full_budget", True):
            target_txt += " ✓" if statistics.median(returns) >= target else " ✗"
        zoo = ZOO.get((e["algo"], e["env"]))
        zoo_txt = "" if zoo is None else f"{_fmt(zoo[0])} @ {zoo[1]}"
        wall = f"{statistics.median(walls):.0f}" if walls else ""
        lines.append(
            f"| {e['algo']} | {e['env']} | {_steps_label(e['steps'])} | {len(e['runs'])} | {median} | {spread} "
            f"| {target_txt} | {zoo_txt} | {wall} | {e['date']} ({e.get('cpus', '?')}, {e.get('jobs', '?')}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(ALGORITHMS), help="comma-separated algorithms")
    parser.add_argument("--envs", default=",".join(CLASSIC), help="comma-separated environment ids")
    parser.add_argument("--seeds", default="3", help="a number of seeds (0..n-1) or a comma-separated list")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply each preset's total_steps")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each uses one core)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of learning.json / learning.md")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep run directories here")
    args = parser.parse_args(argv)

    seeds = list(range(int(args.seeds))) if "," not in args.seeds else [int(s) for s in args.seeds.split(",")]
    cases = [
        (algo, env)
        for algo in args.algos.split(",")
        for env in args.envs.split(",")
        if PRESETS.get(algo, {}).get(env)
    ]
    if not cases:
        parser.error("no preset matches those --algos and --envs")
    args.results.mkdir(parents=True, exist_ok=True)
    store = args.results / "learning.json"
    entries: list[dict] = json.loads(store.read_text()) if store.exists() else []

    runs_root = args.runs_dir or Path(tempfile.mkdtemp(prefix="policygrad-bench-"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per run; --jobs sets the parallelism
    for algo, env in cases:
        steps = max(1, int(PRESETS[algo][env]["total_steps"] * args.steps_scale))
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = list(pool.map(lambda s: run_one(algo, env, s, steps, runs_root), seeds))
        for r in runs:
            status = f"{r['return']:.1f}" if "return" in r else f"error: {r['error']}"
            print(f"{algo:9s} {env:26s} seed {r['seed']}: {status}  ({r['wall_s']:.0f} s)", flush=True)
        entry = {
            "algo": algo,
            "env": env,
            "steps": steps,
            "full_budget": args.steps_scale >= 1.0,
            "runs": runs,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "jobs": max(1, args.jobs),
        }
        entries = [e for e in entries if (e["algo"], e["env"], e["steps"]) != (algo, env, steps)] + [entry]
        store.write_text(json.dumps(entries, indent=1) + "\n")
        (args.results / "learning.md").write_text(render(entries))
    print(render(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
