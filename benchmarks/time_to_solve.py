"""Time to solve CartPole-v1 as a whole process, and its peak memory.

For each seed this runs, in a fresh process and timed from outside (imports, building, training,
the final checkpoint, evaluation and the learning-curve plot all included)::

    /usr/bin/time -f "%e s %M KB" policygrad train --env CartPole-v1 --target-return 475 --quiet \\
        --out <dir> --seed <seed>
    policygrad eval <dir> --deterministic --json

and reports the wall time, the peak resident memory, the environment steps trained and the saved
policy's 20-episode deterministic return.

    python benchmarks/time_to_solve.py --seeds 5 --out benchmarks/results/time_to_solve.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import emit  # this directory's module (scripts run as python benchmarks/NAME.py)

ROOT = Path(__file__).resolve().parents[1]
POLICYGRAD = Path(sys.executable).with_name("policygrad")


def run_seed(seed: int, env: str, target: float, workdir: Path) -> dict:
    out = workdir / f"t6-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "%e s %M KB", str(POLICYGRAD), "train", "--env", env, "--target-return",
           str(target), "--quiet", "--out", str(out), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-2000:]}")
    match = re.search(r"([0-9.]+) s (\d+) KB", proc.stderr.strip().splitlines()[-1])
    seconds, peak_kb = float(match.group(1)), int(match.group(2))
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    steps = int(float(rows[-1].split(",")[0]))
    evaluation = subprocess.run([str(POLICYGRAD), "eval", str(out), "--deterministic", "--json"],
                                capture_output=True, text=True, cwd=ROOT, check=True)
    result = json.loads(evaluation.stdout.strip().splitlines()[-1])
    return {"seed": seed, "seconds": seconds, "peak_mb": peak_kb / 1024, "steps": steps,
            "eval_return": result["mean_return"], "eval_episodes": result["episodes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--target-return", type=float, default=475.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in range(args.seeds):
            run = run_seed(seed, args.env, args.target_return, Path(tmp))
            print(f"seed {seed}: {run['seconds']:.2f} s, {run['peak_mb']:.0f} MB, {run['steps']} steps, "
                  f"eval {run['eval_return']:.1f}", file=sys.stderr)
            runs.append(run)
    lines = ["| seed | process s | peak MB | steps | eval return (20 ep., deterministic) |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['steps']} | {r['eval_return']:.1f} |" for r in runs]
    median = statistics.median(r["seconds"] for r in runs)
    lines.append(f"| **median** | **{median:.2f}** | {statistics.median(r['peak_mb'] for r in runs):.0f} | "
                 f"{statistics.median(r['steps'] for r in runs):.0f} | {statistics.median(r['eval_return'] for r in runs):.1f} |")
    text = (f"`policygrad train --env {args.env} --target-return {args.target_return:g}` as a whole process "
            f"(`/usr/bin/time`), {args.seeds} seeds; {os.cpu_count()} CPUs.\n\n" + "\n".join(lines) + "\n")
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
