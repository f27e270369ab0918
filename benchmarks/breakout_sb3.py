"""Stable-Baselines3's PPO on Breakout with the settings of policygrad's Atari PPO preset, for a
learning curve beside policygrad's at the same step counts.

The environment and wrappers are those of ``benchmarks/speed.py``'s SB3 Atari case
(``ALE/Breakout-v5`` with frameskip 1 and SB3's ``AtariWrapper``: no-op starts, frame skip 4 with
max-pooling, 84×84 grayscale, end of life as end of episode, clipped rewards, 4 stacked frames),
8 envs × 128 steps, 4 epochs of minibatch 256, lr 2.5e-4 annealed over ``--schedule`` steps, clip
0.1, entropy 0.01, SB3's CnnPolicy, one torch thread. Training stops at ``--stop`` steps, so that the
learning rate at each step is that of a run of ``--schedule`` steps. Every finished training game
(whole game, unclipped score, from SB3's Monitor) is recorded with the step it ended at.

    pip install -e ".[bench,atari]"
    python benchmarks/breakout_sb3.py --seed 0 --stop 500000 --out benchmarks/results/breakout_sb3_s0.json
    python benchmarks/breakout_sb3.py --summary benchmarks/results/breakout_sb3_s0.json

The summary is the mean score of the games that ended in the 50k steps before each mark.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def train(seed: int, stop: int, schedule: int, out: Path) -> None:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from speed import CASES, sb3_atari_env

    torch.set_num_threads(1)
    case = CASES["ppo_breakout"]  # speed.py's SB3 Atari case: its environment and PPO settings
    env = sb3_atari_env(case.env, case.num_envs, seed, training=True)
    model = PPO("CnnPolicy", env, seed=seed, device="cpu", verbose=0, **case.sb3)
    games: list[tuple[int, float]] = []
    t0 = time.time()

    def save(steps: int) -> None:
        record = {"seed": seed, "stop": stop, "schedule": schedule, "steps": steps, "seconds": time.time() - t0,
                  "games": games}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(out)

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    games.append((self.num_timesteps, float(info["episode"]["r"])))
            return self.num_timesteps < stop

        def _on_rollout_end(self) -> None:
            save(self.num_timesteps)

    model.learn(total_timesteps=schedule, callback=Record())
    save(model.num_timesteps)


def summary(path: Path, marks: list[int]) -> None:
    record = json.loads(path.read_text())
    games = record["games"]
    print(f"seed {record['seed']}: {record['steps']} steps in {record['seconds']:.0f} s, {len(games)} games")
    for mark in marks:
        window = [score for step, score in games if mark - 50_000 < step <= mark]
        if window:
            print(f"{mark:>9,}: {sum(window) / len(window):.1f} (mean of {len(window)} games)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", type=int, default=500_000, help="steps trained")
    parser.add_argument("--schedule", type=int, default=2_000_000, help="steps the learning rate anneals over")
    parser.add_argument("--out", type=Path, default=Path("breakout_sb3.json"))
    parser.add_argument("--summary", type=Path, help="print the mean scores of a finished run's JSON and stop")
    parser.add_argument("--marks", default="250000,500000")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, [int(m) for m in args.marks.split(",")])
    else:
        train(args.seed, args.stop, args.schedule, args.out)


if __name__ == "__main__":
    main()
