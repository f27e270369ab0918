"""`policygrad train` as a whole process, idle and beside CPU-bound competitors: the slow-down ratio.

Each run is timed from outside, like ``/usr/bin/time``: wall, user and system seconds and peak
memory of the whole process (interpreter start, imports, building, training, the checkpoint and
the learning-curve plot)::

    /usr/bin/time -f "%e %U %S %M" PYTHON -c "...policygrad.cli.main()" train --quiet --steps 30000 --out <dir>

Idle and loaded runs alternate (idle, loaded, idle, loaded, ...); a loaded run has ``--competitors``
busy-loop processes (benchmarks/load.py) started just before it and ended, by their PIDs, just
after it. The result is the median of each and the ratio loaded / idle of the median wall times;
the library's target is ≤ 1.5×.

The interpreter and the source directory are options, so the same script times any checkout,
for example an older revision in a worktree::

    git worktree add /tmp/old 97e186d
    python benchmarks/train_under_load.py --src /tmp/old/src
    python benchmarks/train_under_load.py                     # this checkout's src/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import load  # this directory's modules (scripts run as python benchmarks/NAME.py)
from report import emit

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"
# Only policygrad.cli.main is assumed of the checkout timed (no console script, no __main__ guard).
CLI = "import sys; from policygrad.cli import main; sys.exit(main())"
TARGET = 1.5


def revision(src: Path) -> str:
    """The git revision of ``src`` (``+dirty`` when its tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def child_env(src: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])]))


def imported_from(python: str, src: Path) -> Path:
    """Where ``python`` with ``src`` first on its path imports policygrad from (an installed copy may shadow it)."""
    proc = subprocess.run([python, "-c", "import policygrad; print(policygrad.__file__)"], capture_output=True,
                          text=True, env=child_env(src), cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"{python} cannot import policygrad from {src}:\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]).resolve().parent


def time_train(python: str, src: Path, steps: int, extra: list[str], workdir: Path, tag: str) -> dict:
    """One ``policygrad train`` process, timed from outside."""
    out, timing = workdir / f"run-{tag}", workdir / f"time-{tag}.txt"
    cmd = [TIME, "-f", "%e %U %S %M", "-o", str(timing), python, "-c", CLI, "train", "--quiet",
           "--steps", str(steps), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=child_env(src))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall, user, system, peak_kb = timing.read_text().strip().splitlines()[-1].split()
    return {"wall": float(wall), "user": float(user), "sys": float(system), "peak_mb": int(peak_kb) / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run (default: this one)")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the directory holding the policygrad package, put first on PYTHONPATH (default: ./src)")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each, idle and loaded (default 3)")
    parser.add_argument("--competitors", type=int, default=1, metavar="K",
                        help="CPU-bound competitor processes during each loaded run (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown result here")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    parser.add_argument("train_args", nargs="*", help="further `policygrad train` arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.competitors < 1:
        parser.error("--runs and --competitors must be ≥ 1")
    if not Path(TIME).exists():
        parser.error(f"{TIME} is needed (GNU time)")
    src = args.src.resolve()
    if not (src / "policygrad" / "cli.py").exists():
        parser.error(f"no policygrad/cli.py under {src}")
    python = os.path.abspath(args.python) if os.sep in args.python else args.python  # not resolved: a venv's link
    package = imported_from(python, src)
    if package != src / "policygrad":
        parser.error(f"{python} imports policygrad from {package}, not from {src}")
    rev = revision(src)
    runs: dict[str, list[dict]] = {"idle": [], "loaded": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for kind, k in (("idle", 0), ("loaded", args.competitors)):
                with load.competitors(k) as procs:
                    run = time_train(python, src, args.steps, args.train_args, Path(tmp), f"{kind}-{i}")
                    load.check_alive(procs)
                run["competitors"] = k
                runs[kind].append(run)
                print(f"run {i} {kind}: wall {run['wall']:.2f} s, user {run['user']:.2f} s, sys {run['sys']:.2f} s, "
                      f"peak {run['peak_mb']:.0f} MB", file=sys.stderr)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    ratio = med("loaded", "wall") / med("idle", "wall")
    cmd = f"policygrad train --quiet --steps {args.steps}" + "".join(f" {a}" for a in args.train_args)
    loops = "a pure-Python busy loop" if args.competitors == 1 else "pure-Python busy loops"
    lines = [
        f"`{cmd}` as a whole process (`/usr/bin/time`), median of {args.runs} run{'s' if args.runs != 1 else ''} "
        f"each, idle and with {load.describe(args.competitors)} ({loops}); "
        f"source {src} at {rev}; {os.cpu_count()} CPUs, Python `{python}`.",
        "",
        "| load | wall s | user s | sys s | peak MB | wall s, every run |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("idle", "loaded"):
        label = load.describe(0 if kind == "idle" else args.competitors)
        every = ", ".join(f"{r['wall']:.2f}" for r in runs[kind])
        lines.append(f"| {label} | {med(kind, 'wall'):.2f} | {med(kind, 'user'):.2f} | {med(kind, 'sys'):.2f} | "
                     f"{med(kind, 'peak_mb'):.0f} | {every} |")
    lines += ["", f"Loaded / idle wall: **{ratio:.2f}×** (target ≤ {TARGET:.1f}×: "
                  f"{'met' if ratio <= TARGET else 'not met'})."]
    emit("\n".join(lines) + "\n", args.out)
    if args.json:
        record = {"command": cmd, "src": str(src), "revision": rev, "python": python, "cpus": os.cpu_count(),
                  "competitors": args.competitors, "runs": runs, "ratio_wall": ratio, "target": TARGET}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
