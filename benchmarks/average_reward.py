"""Average-reward PPO against discounted PPO (γ = 0.99 and 0.999) on continuing tasks.

Every run trains PPO with the same settings and the same step budget on a task without a time
limit (``time_limit = 0``: one endless episode per environment copy), differing only in the
criterion: ``criterion = "average"`` (differential advantages, policygrad.algorithms.average) or
``criterion = "discounted"`` with γ = 0.99 or 0.999. Each run is a subprocess

    python -m policygrad.cli train --algo ppo --env ENV --seed S --steps STEPS --quiet --out DIR \\
        --set time_limit=0 --set criterion=... [--set gamma=...] --set KEY=VALUE ...

and its curve is the ``reward_per_step`` column of metrics.csv: the raw reward per step of each
rollout of the (stochastic) training policy. The table gives, per variant, the median over seeds
of the mean reward per step over the rollouts in each quarter of the budget; the last column (the
final quarter) is the number compared. The same settings for every variant are given in
``ENVS`` and printed with the table. No reward normalisation (it is defined by a discounted
return and is rejected under the average criterion), so all variants see raw rewards.

Environments: ``pendulum`` (Pendulum-v1), ``access`` (policygrad/AccessControl-v0, whose exact
optimum ρ* = 2.7476 is printed beside it) and ``halfcheetah`` (HalfCheetah-v5; needs
``pip install policygrad[mujoco]``; slow, not part of CI).

Examples::

    python benchmarks/average_reward.py --envs access --steps 200000 --seeds 3 --jobs 2
    python benchmarks/average_reward.py --envs pendulum --steps 200000 --seeds 3 --jobs 2
    python benchmarks/average_reward.py --envs halfcheetah --steps 1000000 --seeds 3 --jobs 3

Results accumulate in ``benchmarks/results/average_reward.json`` (one entry per environment and
budget) and the table ``benchmarks/results/average_reward.md`` is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import csv
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

RESULTS = Path(__file__).resolve().parent / "results"

ENVS: dict[str, dict] = {
    # name: the Gymnasium id and the PPO settings shared by every variant.
    "pendulum": {
        "id": "Pendulum-v1",
        # The PPO Pendulum-v1 preset (4 envs x 1024 steps, 10 epochs of 64), without its γ.
        "settings": {"num_envs": 4, "num_steps": 1024, "num_epochs": 10, "minibatch_size": 64,
                     "learning_rate": 1e-3, "gae_lambda": 0.95, "clip_eps": 0.2},
    },
    "access": {
        "id": "policygrad/AccessControl-v0",
        "settings": {"num_envs": 8, "num_steps": 128, "num_epochs": 4, "minibatch_size": 256,
                     "learning_rate": 1e-3, "gae_lambda": 0.95},
        "optimum": 2.747642,
    },
    "halfcheetah": {
        "id": "HalfCheetah-v5",
        # The PPO MuJoCo preset (PPO paper, Table 3) with observation normalisation only.
        "settings": {"num_envs": 1, "num_steps": 2048, "num_epochs": 10, "minibatch_size": 64,
                     "learning_rate": 3e-4, "gae_lambda": 0.95, "clip_eps": 0.2, "normalize_obs": True},
    },
}

VARIANTS: dict[str, dict] = {
    "average": {"criterion": "average"},
    "discounted γ=0.99": {"criterion": "discounted", "gamma": 0.99},
    "discounted γ=0.999": {"criterion": "discounted", "gamma": 0.999},
}


def _sets(values: dict) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out += ["--set", f"{key}={text}"]
    return out


def command(env: str, variant: str, seed: int, steps: int, out: Path) -> list[str]:
    """The ``policygrad train`` command line of one run."""
    spec = ENVS[env]
    settings = {"time_limit": 0, **VARIANTS[variant], **spec["settings"], "tensorboard": False}
    return [sys.executable, "-m", "policygrad.cli", "train", "--algo", "ppo", "--env", spec["id"], "--seed",
            str(seed), "--steps", str(steps), "--quiet", "--out", str(out), *_sets(settings)]


def quarters(run_dir: Path, steps: int) -> list[float]:
    """Mean reward_per_step of the rollouts in each quarter of the budget."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [(int(r["step"]), float(r["reward_per_step"])) for r in csv.DictReader(f) if r["reward_per_step"]]
    out = []
    for q in range(4):
        low, high = q * steps / 4, (q + 1) * steps / 4
        values = [v for s, v in rows if low < s <= high] or [v for s, v in rows if s > low][:1]
        out.append(statistics.fmean(values) if values else float("nan"))
    return out


def run_one(env: str, variant: str, seed: int, steps: int, runs_dir: Path) -> dict:
    out = runs_dir / f"{env}-{variant.replace(' ', '_').replace('=', '')}-s{seed}"
    cmd = command(env, variant, seed, steps, out)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"variant": variant, "seed": seed, "wall_s": wall,
                "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return {"variant": variant, "seed": seed, "wall_s": wall, "quarters": quarters(out, steps)}


def render(entries: list[dict]) -> str:
    lines = [
        "# Average-reward vs discounted PPO on continuing tasks",
        "",
        "Reward per step of the training policy (raw rewards, metrics.csv `reward_per_step`), mean over the "
        "rollouts of each quarter of the budget, median over seeds. Produced by `benchmarks/average_reward.py`; "
        "every variant uses the same settings (listed) with `time_limit=0`.",
        "",
        "| env | steps | variant | seeds | 0–25% | 25–50% | 50–75% | 75–100% | min–max (last) | wall (s) | measured |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for e in sorted(entries, key=lambda e: (e["env"], e["steps"])):
        for variant in VARIANTS:
            runs = [r for r in e["runs"] if r["variant"] == variant and "quarters" in r]
            failed = [r for r in e["runs"] if r["variant"] == variant and "error" in r]
            if not runs and not failed:
                continue
            if runs:
                med = [statistics.median(r["quarters"][q] for r in runs) for q in range(4)]
                last = [r["quarters"][3] for r in runs]
                cells = " | ".join(f"{m:.3f}" for m in med)
                spread = f"{min(last):.3f} – {max(last):.3f}"
                wall = f"{statistics.median(r['wall_s'] for r in runs):.0f}"
            else:
                cells, spread, wall = " | ".join(["failed"] * 4), "", ""
            note = f" ({len(failed)} failed)" if failed else ""
            lines.append(f"| {e['env_id']} | {e['steps']:,} | {variant} | {len(runs)}{note} | {cells} | {spread} "
                         f"| {wall} | {e['date']} ({e.get('cpus', '?')} cpus, {e.get('jobs', '?')} jobs) |")
    lines += ["", "Shared settings:", ""]
    for name, spec in ENVS.items():
        extra = f"; exact optimum ρ* = {spec['optimum']}" if "optimum" in spec else ""
        lines.append(f"- {spec['id']}: {json.dumps(spec['settings'])}{extra}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="access,pendulum", help=f"comma-separated, from {', '.join(ENVS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--steps", type=int, default=200_000, help="environment steps per run")
    parser.add_argument("--seeds", default="3", help="a number of seeds (0..n-1) or a comma-separated list")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of average_reward.json / .md")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep run directories here")
    args = parser.parse_args(argv)

    seeds = list(range(int(args.seeds))) if "," not in args.seeds else [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [e for e in args.envs.split(",") if e not in ENVS]
    if unknown:
        parser.error(f"unknown variant or environment {unknown[0]!r}")
    args.results.mkdir(parents=True, exist_ok=True)
    store = args.results / "average_reward.json"
    entries = json.loads(store.read_text()) if store.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        for env in args.envs.split(","):
            jobs = [(env, v, s, args.steps, runs_dir) for v in variants for s in seeds]
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                runs = list(pool.map(lambda a: run_one(*a), jobs))
            for r in runs:
                shown = r.get("quarters", r.get("error"))
                print(f"{env} {r['variant']} seed {r['seed']}: {shown} ({r['wall_s']:.0f} s)", flush=True)
            previous = next((e for e in entries if e["env"] == env and e["steps"] == args.steps), None)
            kept = [r for r in (previous or {}).get("runs", []) if r["variant"] not in variants]
            entry = {"env": env, "env_id": ENVS[env]["id"], "steps": args.steps, "runs": kept + runs,
                     "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                     "jobs": max(1, args.jobs)}
            entries = [e for e in entries if not (e["env"] == env and e["steps"] == args.steps)] + [entry]
            store.write_text(json.dumps(entries, indent=1) + "\n")
    table = render(entries)
    (args.results / "average_reward.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
