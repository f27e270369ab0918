"""Average-reward PPO on policygrad/AccessControl-v0, scored by the exact average reward.

Trains the PPO preset (criterion = "average") with a checkpoint every ``--every`` steps, then
scores each kept checkpoint by the exact ρ of its policy on the task's finite MDP
(policygrad.tabular.evaluate_policy, setting "average"): the stochastic policy as trained and its
greedy version, each as a percentage of the optimum ρ* from relative value iteration.

    python benchmarks/access_control.py                          # seed 0, 300k steps (the preset)
    python benchmarks/access_control.py --seeds 0,1,2 --steps 100000

Prints a Markdown table (one row per seed and checkpoint) and writes it to
``benchmarks/results/access_control.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from policygrad.tabular import access_control_mdp, evaluate_policy, optimal_average_reward, policy_table
from policygrad.runconfig import resolve_run
from policygrad.training import build_session, load_run_checkpoint, restore_policy, train

RESULTS = Path(__file__).resolve().parent / "results"


def run(seed: int, steps: int, every: int) -> list[tuple[int, float, float]]:
    """Train one seed; (step, stochastic ρ / ρ*, greedy ρ / ρ*) for every kept checkpoint."""
    mdp = access_control_mdp()
    optimum = optimal_average_reward(mdp)
    spec = resolve_run("ppo", "policygrad/AccessControl-v0", overrides={"tensorboard": False, "checkpoint_every": every},
                       flags={"total_steps": steps, "seed": seed})
    session = build_session(spec)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            train(session, run_dir, quiet=True)
            kept = sorted((int(m.group(1)), p) for p in (run_dir / "checkpoints").iterdir()
                          if (m := re.fullmatch(r"step_(\d+)", p.name)))
            kept.append((session.step, run_dir / "checkpoints" / "last"))
            for step, path in kept:
                tensors, meta = load_run_checkpoint(path)
                restore_policy(session, tensors, meta)
                stochastic, greedy = policy_table(session.policy, session.encoder, mdp.num_states)
                rows.append((step, evaluate_policy(mdp, stochastic, "average").rho / optimum,
                             evaluate_policy(mdp, greedy, "average").rho / optimum))
    finally:
        session.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--steps", type=int, default=300_000, help="environment steps per run (default 300000)")
    parser.add_argument("--every", type=int, default=20_000, help="checkpoint interval in steps (default 20000)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["| seed | steps | ρ of the stochastic policy (% of ρ*) | ρ of the greedy policy (% of ρ*) |",
             "|---:|---:|---:|---:|"]
    t0 = time.perf_counter()
    for seed in seeds:
        for step, stochastic, greedy in run(seed, args.steps, args.every):
            lines.append(f"| {seed} | {step:,} | {100 * stochastic:.1f} | {100 * greedy:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join([
        "# Average-reward PPO on policygrad/AccessControl-v0",
        "",
        f"`python benchmarks/access_control.py --seeds {args.seeds} --steps {args.steps} --every {args.every}` "
        f"({time.perf_counter() - t0:.0f} s). Exact ρ of each kept checkpoint's policy, % of ρ* = "
        f"{optimal_average_reward(access_control_mdp()):.4f}.",
        "",
        *lines,
        "",
    ])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "access_control.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
