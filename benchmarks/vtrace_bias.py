"""V-trace's bias against the exact gradient, and both off-policy estimators against their predictions.

For every lag K, ρ̄ and c̄ of the grid, ``policygrad.verify_lagged.verify_lagged`` samples episodes
from a behaviour policy μ = softmax(θ₀) that lags the target π = softmax(θ_K) by K exact gradient
steps of α on a finite MDP (default: ``random_mdp(6, 3, seed=0, setting="discounted", gamma=0.9)``,
what ``policygrad verify --lag K`` uses without ``--mdp``), and reports:

- V-trace's predicted relative bias ‖g_vt − ∇J(π)‖ / ‖∇J(π)‖ (closed form, no sampling);
- max |z| of the sampled V-trace mean against g_vt, and against ∇J(π);
- max |z| of per-decision IS against ∇J(π) (it is unbiased).

Each cell is the same as ``policygrad verify --lag K --rho-bar R --c-bar C --episodes E --seed S``.

Example::

    python benchmarks/vtrace_bias.py --episodes 20000 --out benchmarks/results/vtrace_bias.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lags", default="0,1,4,16", help="comma-separated lags K")
    parser.add_argument("--rho-bars", default="1,inf", help="comma-separated ρ̄")
    parser.add_argument("--c-bars", default="0.5,1", help="comma-separated c̄")
    parser.add_argument("--lag-step", type=float, default=0.1)
    parser.add_argument("--episodes", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mdp-seed", type=int, default=0, help="seed of random_mdp(6, 3, discounted, γ = 0.9)")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)

    import torch

    from policygrad.tabular import random_mdp
    from policygrad.verify_lagged import verify_lagged

    torch.set_num_threads(1)
    mdp = random_mdp(6, 3, seed=args.mdp_seed, setting="discounted", gamma=0.9)
    lags = [int(x) for x in args.lags.split(",")]
    rho_bars = [float(x) for x in args.rho_bars.split(",")]
    c_bars = [float(x) for x in args.c_bars.split(",")]
    rows = []
    header = ("| lag K | ρ̄ | c̄ | V-trace predicted bias | V-trace max\\|z\\| vs prediction | V-trace max\\|z\\| vs ∇J(π) "
              "| per-decision IS max\\|z\\| vs ∇J(π) | V-trace var / IS var | seconds |")
    rows.append(header)
    rows.append("|" + "---|" * 9)
    worst = {"vtrace": 0.0, "per_decision_is": 0.0}
    for lag in lags:
        for rho_bar in rho_bars:
            for c_bar in c_bars:
                start = time.perf_counter()
                report = verify_lagged(mdp, lag=lag, lag_step=args.lag_step, rho_bar=rho_bar, c_bar=c_bar,
                                       episodes=args.episodes, seed=args.seed)
                seconds = time.perf_counter() - start
                vt, pd = report.estimators["vtrace"], report.estimators["per_decision_is"]
                worst["vtrace"] = max(worst["vtrace"], vt.against_predicted.max_abs_z)
                worst["per_decision_is"] = max(worst["per_decision_is"], pd.against_predicted.max_abs_z)
                rows.append(
                    f"| {lag} | {rho_bar:g} | {c_bar:g} | {100 * vt.predicted_relative_error:.1f}% "
                    f"| {vt.against_predicted.max_abs_z:.2f} | {vt.against_exact.max_abs_z:.2f} "
                    f"| {pd.against_predicted.max_abs_z:.2f} | {vt.against_exact.variance_ratio:.3f} | {seconds:.1f} |"
                )
                print(rows[-1], flush=True)
    command = " ".join(["python", "benchmarks/vtrace_bias.py", *(argv if argv is not None else sys.argv[1:])])
    summary = (f"\nworst max|z|: V-trace vs its prediction {worst['vtrace']:.2f}, per-decision IS vs ∇J(π) "
               f"{worst['per_decision_is']:.2f} ({args.episodes} episodes per cell, seed {args.seed}, "
               f"random_mdp(6, 3, seed={args.mdp_seed}, discounted, γ = 0.9), α = {args.lag_step:g})")
    print(summary)
    if args.out:
        text = "\n".join([f"# V-trace bias\n\n`{command}`\n", *rows, summary, ""])
        Path(args.out).write_text(text, encoding="utf-8")
    return 0 if max(worst.values()) < 4 else 1


if __name__ == "__main__":
    sys.exit(main())
