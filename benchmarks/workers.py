"""Rollout workers on Ray, measured: faults survived, overhead, scaling, asynchronous learning.

    python benchmarks/workers.py faults   [--trials 20] [--updates 40] [--no-node-loss]
    python benchmarks/workers.py overhead [--repeats 3]
    python benchmarks/workers.py scaling  [--workers 1 2 4 8] [--copies 8] [--steps 16384]
    python benchmarks/workers.py learning [--seeds 0 1 2]

Each prints a markdown table (``--out FILE`` also writes it) and, with ``--json FILE``, every
record. Every run trains through :func:`policygrad.training.train` on the private local Ray cluster
that ``--address local`` starts (policygrad.distributed.cluster: its own temporary directory, the
workers at niceness 0; nothing else on the machine is touched), one per part; the node-loss trial
starts a cluster of its own.

``faults``
    PPO on CartPole-v1 with 4 workers of one environment copy each (40 updates of 4 × 128 steps).
    In each trial one worker, chosen at random (seeded), is SIGKILLed at a random moment: at a
    random update, after a random 0–50 ms, so the kill lands while workers collect or while the
    learner updates. Half the trials are synchronous, half asynchronous (max_lag 2). Then one
    node loss: a cluster of a head (no CPUs) and two nodes of 4 CPUs (``ray.cluster_utils``), the
    node holding worker 0 removed mid-run and the workers on it killed, as when a machine goes.
    Reported per trial: the run completed, accepted environment steps against the requested
    total, duplicate keys refused, fragments beyond the lag bound, the lags seen, and the recovery
    time: from the kill to the replacement being ready.
``overhead``
    Seconds per update with one synchronous worker against the same run in one process, PPO
    presets on CartPole-v1 (8 × 32 steps per update) and Hopper-v5 (2048 steps per update),
    alternating A/B ``--repeats`` times; the time to start (cluster and workers) apart.
``scaling``
    Environment steps per second of PPO on an environment whose step waits 1 ms (CartPole with a
    ``time.sleep(0.001)``: a remote simulator), 8 copies (``--copies``) shared by 1, 2, 4, 8
    workers, synchronous and asynchronous (max_lag 2), training included: from the first update
    to the last (the reset before and the evaluation after are left out).
``learning``
    Synchronous PPO (the CartPole-v1 and Pendulum-v1 presets, 4 workers), then asynchronous PPO
    and IMPALA (4 workers, max_lag 2) evaluated every 5% of the preset's steps: the first step at
    which the deterministic evaluation reaches the synchronous run's final return, and the one
    where it reaches the one-process preset's median return (:data:`PPO_RETURNS`), as multiples
    of the preset's steps, and the median lag.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

HERE = Path(__file__).resolve().parent
# The workers import the slow environment from this directory.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(HERE))

import ray  # noqa: E402

from policygrad.distributed.ledger import Ledger  # noqa: E402
from policygrad.runconfig import resolve_run  # noqa: E402
from policygrad.training import build_session, train  # noqa: E402


def local_cluster(cpus: int = 9):
    """The private local cluster ``--address local`` starts (policygrad.distributed.cluster), kept
    for all the runs of a part: each run then finds Ray initialised and uses it."""
    from policygrad.distributed.cluster import Cluster

    return Cluster("local", workers=cpus - 1)  # CPUs for the workers and the spare


def close_cluster(cluster) -> None:
    cluster.close()


def run(algo: str, env: str, run_dir: Path, *, values: dict, total: int, callback=None, session_box=None) -> dict:
    """Build and train one run; the summary with start-up and training seconds."""
    spec = resolve_run(algo, env, overrides={"tensorboard": False, **values}, flags={"total_steps": total})
    t0 = time.perf_counter()
    session = build_session(spec)
    started = time.perf_counter() - t0
    if session_box is not None:
        session_box.append(session)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = train(session, run_dir, quiet=True, callback=callback)
    finally:
        session.close()
    summary["startup_seconds"] = started
    return summary


def steady_rate(run_dir: Path) -> tuple[int, float]:
    """Environment steps and seconds from the first metrics row to the last: training at its steady
    rate, without the reset before the first update or the final evaluation after the last."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]["step"]) - int(rows[0]["step"]), float(rows[-1]["wall_time"]) - float(rows[0]["wall_time"])


def per_update(run_dir: Path) -> float:
    """Median seconds between consecutive metrics rows (one update each) after the first."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        times = [float(row["wall_time"]) for row in csv.DictReader(f)]
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    return statistics.median(gaps)


# --- faults -------------------------------------------------------------------------------------


def fault_trial(index: int, work: Path, asynchronous: bool, updates: int = 40) -> dict:
    rng = random.Random(index)
    total = updates * 4 * 128
    at_update = rng.randrange(2, updates - 4)
    delay = rng.uniform(0.0, 0.05)
    worker = rng.randrange(4)
    box: list = []
    kill: dict = {}

    class Killer:
        def on_rollout_end(self, step):
            if step == at_update * 512 and not kill:
                pid = box[0].collector.pids[worker]

                def fire():
                    time.sleep(delay)
                    kill.update(at=time.time(), pid=pid)
                    os.kill(pid, signal.SIGKILL)

                threading.Thread(target=fire, daemon=True).start()

    values = {"num_envs": 4, "num_steps": 128, "workers": 4, "seed": index}
    if asynchronous:
        values.update(worker_mode="async", max_lag=2)
    summary = run("ppo", "CartPole-v1", work / f"trial{index}", values=values, total=total, callback=Killer(),
                  session_box=box)
    return record(f"SIGKILL worker {worker} at update {at_update} + {delay * 1e3:.0f} ms", asynchronous, summary,
                  total, kill.get("at"))


def record(what: str, asynchronous: bool, summary: dict, total: int, killed_at: float | None) -> dict:
    ledger = summary["ledger"]
    lags = {int(k): v for k, v in ledger["lags"].items()}
    recoveries = [r["at"] - killed_at for r in summary["recoveries"]] if killed_at else []
    return {
        "fault": what,
        "mode": "async" if asynchronous else "sync",
        "completed": summary["step"] >= total,
        "requested_steps": total,
        "accepted_steps": ledger["accepted_steps"],
        "duplicates": ledger["duplicates"],
        "beyond_lag": sum(v for k, v in lags.items() if k > ledger["max_lag"]) + ledger["stale"],
        "lags": lags,
        "replaced": ledger["replaced"],
        "recovery_seconds": max(recoveries) if recoveries else None,
        # of which: starting the replacements, once the failure was seen
        "restart_seconds": max((r["seconds"] for r in summary["recoveries"]), default=None),
    }


def node_loss_trial(work: Path) -> dict:
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="pgbn-", dir="/tmp")
    # Ray writes the address of the cluster it starts under $RAY_TMPDIR/ray: a private one, so that
    # no other Ray user on the machine finds (or has its address replaced by) this cluster.
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"), exist_ok=True)
    # Ray declares a node dead after health_check_failure_threshold missed checks, every
    # health_check_period_ms (5 x 3 s by default); until then it may place new workers there.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "temp_dir": temp,
        "_system_config": {"health_check_period_ms": HEALTH_CHECK_MS, "health_check_failure_threshold": 2}})
    cluster.add_node(num_cpus=4)
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    box: list = []
    kill: dict = {}

    class RemoveNode:
        def on_rollout_end(self, step):
            if step == 10 * 512 and not kill:
                collector = box[0].collector
                target = collector.nodes[0]
                node = next(n for n in cluster.worker_nodes if n.node_id == target)
                pids = [pid for pid, x in collector.processes() if x == target]
                kill.update(at=time.time(), lost=sum(x == target for x in collector.nodes))
                # A machine lost: its Ray processes and the workers on it, all killed at once.
                cluster.remove_node(node, allow_graceful=False)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    total = 40 * 512
    try:
        summary = run("ppo", "CartPole-v1", work / "node-loss", values={"num_envs": 4, "num_steps": 128,
                                                                       "workers": 4, "address": "auto"},
                      total=total, callback=RemoveNode(), session_box=box)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)
    return record(f"node holding {kill.get('lost')} of 4 workers removed at update 10", False, summary, total,
                  kill.get("at"))


HEALTH_CHECK_MS = 500
"""The node-loss cluster's health-check period (Ray's default 3,000 ms), with a threshold of 2 missed
checks (Ray's default 5): the lost node is known dead after about 1 s instead of 15 s."""


def faults(args: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="pgbf-"))
    records = []
    if args.trials:
        cluster = local_cluster()
        try:
            for i in range(args.trials):
                records.append(fault_trial(i, work, asynchronous=i % 2 == 1, updates=args.updates))
                print(json.dumps(records[-1]), flush=True)
        finally:
            close_cluster(cluster)
    if args.node_loss:
        records.append(node_loss_trial(work))
        print(json.dumps(records[-1]), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return records


def faults_table(records: list[dict]) -> str:
    lines = ["| trial | fault | mode | completed | accepted / requested steps | duplicates | beyond lag | lags | "
             "replaced | recovery s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(records):
        rec = "—" if r["recovery_seconds"] is None else f"{r['recovery_seconds']:.2f}"
        lines.append(f"| {i} | {r['fault']} | {r['mode']} | {'yes' if r['completed'] else 'NO'} | "
                     f"{r['accepted_steps']:,} / {r['requested_steps']:,} | {r['duplicates']} | {r['beyond_lag']} | "
                     f"{r['lags']} | {r['replaced']} | {rec} |")
    ok = [r for r in records if r["completed"] and r["accepted_steps"] == r["requested_steps"]
          and not r["duplicates"] and not r["beyond_lag"]]
    recoveries = [r["recovery_seconds"] for r in records if r["recovery_seconds"] is not None]
    lines.append("")
    lines.append(f"{len(ok)} of {len(records)} runs completed with exactly the requested steps, no duplicate and "
                 f"nothing beyond the lag bound; recovery {min(recoveries):.2f}–{max(recoveries):.2f} s "
                 f"(median {statistics.median(recoveries):.2f} s) over {len(recoveries)} replacements.")
    return "\n".join(lines)


# --- overhead -----------------------------------------------------------------------------------


def overhead(args: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="pgbo-"))
    cases = [("CartPole-v1", {}, 40 * 256), ("Hopper-v5", {}, 12 * 2048)]
    records = []
    cluster = local_cluster()
    try:
        for env, values, total in cases:
            for repeat in range(args.repeats):
                for workers in (None, 1):
                    v = dict(values)
                    if workers:
                        v["workers"] = workers
                    name = f"{env}-{repeat}-{'w' if workers else 'p'}"
                    summary = run("ppo", env, work / name, values=v, total=total)
                    records.append({"env": env, "repeat": repeat, "workers": workers,
                                    "seconds_per_update": per_update(work / name),
                                    "startup_seconds": summary["startup_seconds"]})
                    print(json.dumps(records[-1]), flush=True)
    finally:
        close_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)
    return records


def overhead_table(records: list[dict]) -> str:
    lines = ["| environment | one process s/update | 1 worker s/update | overhead | start-up: process s, worker s |",
             "|---|---|---|---|---|"]
    for env in dict.fromkeys(r["env"] for r in records):
        alone = statistics.median(r["seconds_per_update"] for r in records if r["env"] == env and not r["workers"])
        worker = statistics.median(r["seconds_per_update"] for r in records if r["env"] == env and r["workers"])
        s_alone = statistics.median(r["startup_seconds"] for r in records if r["env"] == env and not r["workers"])
        s_worker = statistics.median(r["startup_seconds"] for r in records if r["env"] == env and r["workers"])
        lines.append(f"| {env} | {alone * 1e3:.2f} ms | {worker * 1e3:.2f} ms | {100 * (worker / alone - 1):+.1f}% | "
                     f"{s_alone:.2f}, {s_worker:.2f} |")
    return "\n".join(lines)


# --- scaling ------------------------------------------------------------------------------------


def scaling(args: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="pgbs-"))
    records = []
    cluster = local_cluster(cpus=max(9, max(args.workers) + 1))
    try:
        for mode in ("sync", "async"):
            for workers in args.workers:
                values = {"num_envs": args.copies, "num_steps": 128, "num_epochs": 1, "minibatch_size": 512,
                          "vectorization": "sync", "workers": workers, "worker_mode": mode}
                summary = run("ppo", "slow_envs:slow_cartpole", work / f"{mode}{workers}", values=values,
                              total=args.steps)
                steps, seconds = steady_rate(work / f"{mode}{workers}")
                records.append({"mode": mode, "workers": workers, "steps": steps, "seconds": seconds,
                                "steps_per_second": steps / seconds, "lags": summary["ledger"]["lags"]})
                print(json.dumps(records[-1]), flush=True)
    finally:
        close_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)
    return records


def scaling_table(records: list[dict]) -> str:
    lines = ["| mode | workers | steps | seconds | env steps/s | × 1 worker | lags |", "|---|---|---|---|---|---|---|"]
    for r in records:
        base = next(x for x in records if x["mode"] == r["mode"] and x["workers"] == min(
            y["workers"] for y in records if y["mode"] == r["mode"]))
        lines.append(f"| {r['mode']} | {r['workers']} | {r['steps']:,} | {r['seconds']:.1f} | "
                     f"{r['steps_per_second']:,.0f} | {r['steps_per_second'] / base['steps_per_second']:.2f}× | "
                     f"{r['lags']} |")
    return "\n".join(lines)


# --- learning -----------------------------------------------------------------------------------


def first_reach(run_dir: Path, target: float) -> int | None:
    import csv

    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row["eval_return"] and float(row["eval_return"]) >= target:
                return int(row["step"])
    return None


PPO_RETURNS = {"CartPole-v1": 500.0, "Pendulum-v1": -178.0}
"""The PPO presets' median final return in one process (results/learning.md, 3 seeds): a second
target, apart from each seed's synchronous run."""


def learning(args: argparse.Namespace) -> list[dict]:
    from policygrad.algorithms import get_preset

    work = Path(tempfile.mkdtemp(prefix="pgbl-"))
    records = []
    cluster = local_cluster()
    try:
        for env in ("CartPole-v1", "Pendulum-v1"):
            preset = get_preset("ppo", env)
            total = preset["total_steps"]
            workers = 4 if preset["num_envs"] % 4 == 0 else preset["num_envs"]
            for seed in args.seeds:
                sync = run("ppo", env, work / f"{env}-sync-{seed}", values={"workers": workers, "seed": seed},
                           total=total)
                target = float(statistics.mean(sync["eval_returns"]))
                for algo in ("ppo", "impala"):
                    every = max(1, total // 20)
                    name = f"{env}-{algo}-async-{seed}"
                    values = {"workers": workers, "worker_mode": "async", "max_lag": 2, "seed": seed,
                              "eval_every": every}
                    if algo == "impala":
                        values["num_envs"] = get_preset("impala", env).get("num_envs", preset["num_envs"])
                        values["workers"] = workers if values["num_envs"] % workers == 0 else 1
                    summary = run(algo, env, work / name, values=values, total=int(1.25 * total))
                    reached = first_reach(work / name, target)
                    reference = PPO_RETURNS[env]
                    reached_reference = first_reach(work / name, reference)
                    ledger = summary["ledger"]
                    median_lag = Ledger.from_state(ledger, ledger["max_lag"]).median_lag()
                    records.append({"env": env, "seed": seed, "algo": algo, "sync_return": target,
                                    "preset_steps": total, "reached_at": reached,
                                    "ratio": None if reached is None else reached / total,
                                    "reference_return": reference, "reached_reference_at": reached_reference,
                                    "final_return": float(statistics.mean(summary["eval_returns"])),
                                    "median_lag": median_lag})
                    print(json.dumps(records[-1]), flush=True)
    finally:
        close_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)
    return records


def learning_table(records: list[dict]) -> str:
    lines = ["| env | seed | algorithm (async, max_lag 2) | sync PPO return (4 workers) | reached it at (× preset steps) | "
             "reached the one-process preset median at | final return | median lag |",
             "|---|---|---|---|---|---|---|---|"]

    def at(step: int | None, total: int) -> str:
        return "not within 1.25×" if step is None else f"{step:,} ({step / total:.2f}×)"

    for r in records:
        lines.append(f"| {r['env']} | {r['seed']} | {r['algo']} | {r['sync_return']:.1f} | "
                     f"{at(r['reached_at'], r['preset_steps'])} | "
                     f"{r['reference_return']:g}: {at(r['reached_reference_at'], r['preset_steps'])} | "
                     f"{r['final_return']:.1f} | {r['median_lag']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("faults")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--no-node-loss", dest="node_loss", action="store_false")
    p.add_argument("--updates", type=int, default=40, help="updates per SIGKILL trial (at least 8)")
    p = sub.add_parser("overhead")
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("scaling")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=16384)
    p.add_argument("--copies", type=int, default=8, help="environment copies shared by the workers (num_envs)")
    p = sub.add_parser("learning")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, default=None)
        p.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    what = {"faults": (faults, faults_table), "overhead": (overhead, overhead_table),
            "scaling": (scaling, scaling_table), "learning": (learning, learning_table)}
    measure, table = what[args.what]
    records = measure(args)
    text = table(records)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
