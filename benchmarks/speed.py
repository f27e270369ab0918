"""Side-by-side speed: policygrad against Stable-Baselines3 and the environment floor.

For every case and seed the runner starts fresh worker processes, alternating policygrad and
SB3 (then the floor), on identical hyperparameters, environment, step count and seed. Each worker
prints one JSON line: the training wall time (building the model and environments excluded, all
logging policygrad does by default included), the whole process's time and peak memory, and the
final deterministic return over 20 episodes.

    python benchmarks/speed.py                      # every case, 3 seeds (needs the `bench` extra)
    python benchmarks/speed.py --cases ppo_8x128 --seeds 1 --scale 0.05   # a quick look
    python benchmarks/speed.py --cases ppo_breakout --seeds 2 --first-seed 1   # seeds 1 and 2 only
    python benchmarks/speed.py --competitors 1 --out benchmarks/results/speed_loaded.md   # loaded

With ``--competitors K`` the runner starts K CPU-bound competitor processes (pure-Python busy
loops, benchmarks/load.py) before the first measured run and ends them, by their own PIDs, after
the last: every run of every library then shares the machine with the same load. The load is
written into the table's heading, its ``load`` column and every JSON record, and a loaded table is
refused at the idle table's path (benchmarks/results/speed.md) and vice versa.

The environment floor steps the same vector environment policygrad uses for the same number of
steps with random actions: no policy, no learning. Its time is the least any library could take.

Hyperparameter mapping: SB3's critic loss is vf_coef·MSE while policygrad's is vf_coef·½·MSE,
so policygrad runs with twice SB3's vf_coef (identical losses). Everything else maps one to one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import load  # this directory's modules (scripts run as python benchmarks/NAME.py)
from report import emit

_T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IDLE_TABLE, LOADED_TABLE = RESULTS / "speed.md", RESULTS / "speed_loaded.md"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    algo: str
    env: str
    steps: int
    num_envs: int
    policygrad: dict[str, Any]
    sb3: dict[str, Any]
    sb3_normalize: bool = False
    target_ratio: float | None = None
    floor_ratio: float | None = None
    kind: str = "classic"
    """classic: SB3's make_vec_env; atari: SB3's make_atari_env + VecFrameStack and CnnPolicy."""
    eval_episodes: int = 20
    eval_deterministic: bool = True


# SB3's defaults that policygrad must match explicitly where its own defaults differ.
_PPO_COMMON = dict(learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.0, vf_coef=1.0,
                   max_grad_norm=0.5, normalize_advantages=True, anneal_lr=False, hidden_sizes=[64, 64],
                   activation="tanh", optimizer="adam", optim_eps=1e-5, target_kl=None, clip_vloss=False)

CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "ppo_8x128", "PPO, 8 envs × 128 steps, 4 epochs, minibatch 256", "ppo", "CartPole-v1", 100_000, 8,
            policygrad=dict(_PPO_COMMON, num_steps=128, num_epochs=4, minibatch_size=256),
            sb3=dict(n_steps=128, n_epochs=4, batch_size=256),
            target_ratio=3.0, floor_ratio=4.0,
        ),
        Case(
            "ppo_sb3_default", "PPO, SB3 defaults (8 envs × 2048, 10 epochs, minibatch 64)", "ppo", "CartPole-v1",
            8 * 2048 * 7, 8,
            policygrad=dict(_PPO_COMMON, num_steps=2048, num_epochs=10, minibatch_size=64),
            sb3=dict(),
            target_ratio=2.5,
        ),
        Case(
            "a2c_sb3_default", "A2C, SB3 defaults (8 envs × 5 steps, RMSprop 7e-4)", "a2c", "CartPole-v1", 100_000, 8,
            policygrad=dict(num_steps=5, learning_rate=7e-4, optimizer="rmsprop", optim_eps=1e-5, gamma=0.99,
                            gae_lambda=1.0, ent_coef=0.0, vf_coef=1.0, max_grad_norm=0.5,
                            normalize_advantages=False, anneal_lr=False, hidden_sizes=[64, 64], activation="tanh"),
            sb3=dict(),
            target_ratio=4.0, floor_ratio=2.5,
        ),
        Case(
            # rl-zoo3 2.9.2 hyperparams/ppo.yml, Pendulum-v1: 4 envs x 1024, λ 0.95, γ 0.9, 10 epochs,
            # lr 1e-3, clip 0.2, batch 64 (SB3's default), no normalisation, gSDE with new noise
            # matrices every 4 steps (SB3's gSDE defaults otherwise: log_std_init 0, full_std).
            "ppo_pendulum_zoo", "PPO, RL Zoo Pendulum-v1 settings (4 envs × 1024, γ 0.9, 10 epochs, lr 1e-3, gSDE every 4 steps)",
            "ppo", "Pendulum-v1", 100_000, 4,
            policygrad=dict(_PPO_COMMON, num_steps=1024, num_epochs=10, minibatch_size=64, gamma=0.9,
                            learning_rate=1e-3, use_sde=True, sde_sample_freq=4),
            sb3=dict(n_steps=1024, n_epochs=10, batch_size=64, gamma=0.9, gae_lambda=0.95, learning_rate=1e-3,
                     use_sde=True, sde_sample_freq=4),
            target_ratio=3.0,
        ),
        Case(
            # The PPO MuJoCo preset (PPO paper, Table 3) as SB3 runs it: 1 env x 2048, 10 epochs of
            # minibatch 64, lr 3e-4 annealed to 0, observations and rewards normalised.
            "ppo_hopper", "PPO, Hopper-v5, the MuJoCo preset (1 env × 2048, 10 epochs, minibatch 64, normalised)",
            "ppo", "Hopper-v5", 100_000, 1,
            policygrad=dict(_PPO_COMMON, num_steps=2048, num_epochs=10, minibatch_size=64, anneal_lr=True,
                            normalize_obs=True, normalize_reward=True),
            sb3=dict(n_steps=2048, n_epochs=10, batch_size=64, learning_rate=lambda f: 3e-4 * f),
            sb3_normalize=True, target_ratio=2.0, eval_episodes=5,
        ),
        Case(
            # The PPO Atari preset (CleanRL's ppo_atari) without the clipped value loss, which SB3
            # does not clip by default: 8 envs x 128, 4 epochs of minibatch 256, lr 2.5e-4 annealed,
            # clip 0.1, entropy 0.01; the Nature CNN shared by actor and critic, in both libraries.
            # SB3 steps its AtariWrapper copies in a DummyVecEnv, policygrad ale-py's vector env.
            "ppo_breakout", "PPO, ALE/Breakout-v5, the Atari preset (8 envs × 128, 4 epochs, minibatch 256, Nature CNN)",
            "ppo", "ALE/Breakout-v5", 100_000, 8,
            policygrad=dict(_PPO_COMMON, num_steps=128, num_epochs=4, minibatch_size=256, learning_rate=2.5e-4,
                            anneal_lr=True, clip_eps=0.1, ent_coef=0.01, hidden_sizes=[64, 64]),
            sb3=dict(n_steps=128, n_epochs=4, batch_size=256, learning_rate=lambda f: 2.5e-4 * f, clip_range=0.1,
                     ent_coef=0.01),
            kind="atari", target_ratio=1.5, eval_episodes=2, eval_deterministic=False,
        ),
    ]
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------------
# Workers: one library, one case, one seed, in a fresh process.
# ------------------------------------------------------------------------------------------------


def work_policygrad(case: Case, seed: int, steps: int) -> dict[str, Any]:
    import numpy as np

    from policygrad.runconfig import resolve_run
    from policygrad.training import build_session, evaluate_session, train

    overrides = dict(case.policygrad, num_envs=case.num_envs, total_steps=steps, seed=seed)
    spec = resolve_run(case.algo, case.env, overrides=overrides)
    session = build_session(spec)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            train(session, Path(run_dir), quiet=True)
            train_seconds = session.wall_time
            returns = evaluate_session(session, case.eval_episodes, deterministic=case.eval_deterministic,
                                       seed=10_000 + seed)
    finally:
        session.close()
    return {"train_seconds": train_seconds, "steps": session.step, "final_return": float(np.mean(returns))}


def sb3_atari_env(env_id: str, n: int, seed: int, training: bool) -> Any:
    """SB3's vector env for an Atari case: ``make_atari_env`` (AtariWrapper) and 4 stacked frames.
    ``frameskip=1``: AtariWrapper repeats each action 4 frames and max-pools, as policygrad does;
    lost lives end episodes and rewards are clipped only when ``training``."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    wrapper = dict(frame_skip=4, noop_max=30, screen_size=84, terminal_on_life_loss=training, clip_reward=training)
    return VecFrameStack(make_atari_env(env_id, n_envs=n, seed=seed, env_kwargs={"frameskip": 1},
                                        wrapper_kwargs=wrapper), 4)


def work_sb3(case: Case, seed: int, steps: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)  # the same thread count policygrad uses
    if case.kind == "atari":
        def make(n: int, env_seed: int, training: bool) -> Any:
            return sb3_atari_env(case.env, n, env_seed, training)

        policy = "CnnPolicy"
    else:
        def make(n: int, env_seed: int, training: bool) -> Any:
            return make_vec_env(case.env, n_envs=n, seed=env_seed)

        policy = "MlpPolicy"
    env = make(case.num_envs, seed, True)
    if case.sb3_normalize:
        env = VecNormalize(env, gamma=case.sb3.get("gamma", 0.99))
    cls = {"ppo": PPO, "a2c": A2C}[case.algo]
    model = cls(policy, env, seed=seed, device="cpu", verbose=0, **case.sb3)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    train_seconds = time.perf_counter() - t0
    eval_env = make(1, 10_000 + seed, False)
    if case.sb3_normalize:
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False, gamma=case.sb3.get("gamma", 0.99))
        eval_env.obs_rms = env.obs_rms
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=case.eval_episodes,
                              deterministic=case.eval_deterministic)
    return {"train_seconds": train_seconds, "steps": int(model.num_timesteps), "final_return": float(np.mean(mean))}


def work_floor(case: Case, seed: int, steps: int) -> dict[str, Any]:
    import numpy as np

    from policygrad.atari import AtariOptions
    from policygrad.envs import make_vec_env
    from policygrad.runconfig import resolve_run

    spec = resolve_run(case.algo, case.env, overrides=dict(case.policygrad, num_envs=case.num_envs, seed=seed))
    envs = make_vec_env(case.env, case.num_envs, seed, vectorization=spec.train.vectorization,
                        atari=AtariOptions.from_train(spec.train))
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(64)]
    envs.reset(seed=seed)
    n = 0
    t0 = time.perf_counter()
    while n < steps:
        envs.step(actions[(n // case.num_envs) % 64])
        n += case.num_envs
    train_seconds = time.perf_counter() - t0
    envs.close()
    return {"train_seconds": train_seconds, "steps": n, "final_return": float(np.nan)}


WORKERS = {"policygrad": work_policygrad, "sb3": work_sb3, "floor": work_floor}


def run_worker(lib: str, case_name: str, seed: int, steps: int) -> None:
    result = WORKERS[lib](CASES[case_name], seed, steps)
    result.update(lib=lib, case=case_name, seed=seed, process_seconds=time.perf_counter() - _T_START,
                  peak_mb=_peak_mb())
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------


def spawn(lib: str, case: str, seed: int, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", lib, case, str(seed), str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{lib} {case} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class CaseResult:
    case: Case
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"policygrad": [], "sb3": [], "floor": []})

    def median(self, lib: str, key: str) -> float:
        return statistics.median(r[key] for r in self.runs[lib])

    def ratios(self, num: str, den: str) -> list[float]:
        return [a["train_seconds"] / max(b["train_seconds"], 1e-9) for a, b in zip(self.runs[num], self.runs[den])]


def load_heading(competitors: int) -> str:
    if competitors == 0:
        return "**Idle machine**: no competitor processes."
    loops = "a pure-Python busy loop" if competitors == 1 else "pure-Python busy loops"
    return (f"**Loaded machine**: with {load.describe(competitors)} ({loops}) running throughout every "
            f"measured run, on {os.cpu_count()} CPUs.")


def format_results(results: list[CaseResult], seeds: int, competitors: int = 0) -> str:
    lines = [
        load_heading(competitors),
        "",
        "| case | steps | SB3 s | policygrad s | SB3 / policygrad (median, range) | target | policygrad steps/s | "
        "floor s | policygrad / floor | floor target | return SB3 | return policygrad | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        steps = r.median("policygrad", "steps")
        pg = r.median("policygrad", "train_seconds")
        dash = "—"  # a library that was not run (--libs)
        if r.runs["sb3"]:
            speedup = r.ratios("sb3", "policygrad")
            sb3_s = f"{r.median('sb3', 'train_seconds'):.2f}"
            ratio = f"**{statistics.median(speedup):.2f}×** ({min(speedup):.2f}–{max(speedup):.2f})"
            sb3_return = f"{r.median('sb3', 'final_return'):.1f}"
        else:
            sb3_s = ratio = sb3_return = dash
        if r.runs["floor"]:
            overhead = r.ratios("policygrad", "floor")
            floor_s, floor_ratio = f"{r.median('floor', 'train_seconds'):.2f}", f"{statistics.median(overhead):.2f}×"
        else:
            floor_s = floor_ratio = dash
        lines.append(
            f"| {c.name}: {c.description} | {int(steps)} | {sb3_s} | {pg:.2f} | {ratio} | "
            f"{'≥ %.1f×' % c.target_ratio if c.target_ratio else dash} | {steps / pg:,.0f} | "
            f"{floor_s} | {floor_ratio} | {'≤ %.1f×' % c.floor_ratio if c.floor_ratio else dash} | {sb3_return} | "
            f"{r.median('policygrad', 'final_return'):.1f} | {load.describe(competitors)} |"
        )
    lines.append("")
    lines.append(f"Medians over {seeds} seeds; ratios are per seed (same seed, back-to-back runs), then the median.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds FIRST_SEED .. FIRST_SEED+SEEDS-1")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's step count")
    parser.add_argument("--libs", nargs="+", choices=list(WORKERS), default=list(WORKERS))
    parser.add_argument("--competitors", type=int, default=0, metavar="K",
                        help="run K CPU-bound competitor processes during every measured run (default 0: idle)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    parser.add_argument("--worker", nargs=4, metavar=("LIB", "CASE", "SEED", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        lib, case, seed, steps = args.worker
        run_worker(lib, case, int(seed), int(steps))
        return 0
    if args.competitors < 0:
        parser.error("--competitors must be ≥ 0")
    for path in (args.out, args.json):
        if path is None:
            continue
        if args.competitors and path.resolve().with_suffix(".md") == IDLE_TABLE:
            parser.error(f"a loaded run is not written over the idle table; use e.g. "
                         f"--out {LOADED_TABLE.relative_to(ROOT)}")
        if not args.competitors and path.resolve().with_suffix(".md") == LOADED_TABLE:
            parser.error(f"an idle run is not written over the loaded table; use e.g. "
                         f"--out {IDLE_TABLE.relative_to(ROOT)}")
    results = []
    with load.competitors(args.competitors) as procs:
        if procs:
            print(f"load: {load.describe(args.competitors)}, PIDs {[p.pid for p in procs]}", file=sys.stderr)
        for name in args.cases:
            case = CASES[name]
            steps = max(case.num_envs, int(case.steps * args.scale))
            result = CaseResult(case)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for lib in args.libs:  # alternate: policygrad, SB3, floor for each seed
                    load.check_alive(procs)
                    run = spawn(lib, name, seed, steps)
                    load.check_alive(procs)  # on throughout the run, not only at its start
                    run["competitors"] = args.competitors
                    result.runs[lib].append(run)
                    print(f"{name} seed {seed} {lib}: {run['train_seconds']:.2f} s, return {run['final_return']:.1f}, "
                          f"process {run['process_seconds']:.1f} s, peak {run['peak_mb']:.0f} MB", file=sys.stderr)
            results.append(result)
    machine = f"{os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}"
    if args.json:
        record = {"competitors": args.competitors, "load": load.describe(args.competitors), "machine": machine,
                  "seeds": args.seeds, "first_seed": args.first_seed, "scale": args.scale,
                  "cases": {r.case.name: {lib: runs for lib, runs in r.runs.items() if runs} for r in results}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    if "policygrad" in args.libs:  # the table compares with whichever of SB3 and the floor ran
        table = format_results(results, args.seeds, args.competitors)
        text = f"{table}\n\nMeasured on: {machine}.\n"
        emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
