"""TRPO's policy step against sb3-contrib's, on identical weights and data.

sb3-contrib collects each rollout and takes its TRPO step; before the step, its policy's weights
and the rollout (observations, actions, log-probabilities, advantages) are copied into
policygrad's actor-critic, which takes its own step on them. The two steps of the actor's
parameters should be the same vector: sb3-contrib averages a Gaussian's KL over the D action
dimensions, so policygrad runs with ``max_kl = D·target_kl`` and ``damping = D·cg_damping``
(docs/training.md, "Algorithms"). Printed per update: the two steps' norms, their cosine, the
step fraction of policygrad's line search and the ratio of the log σ steps.

    pip install -e ".[bench,mujoco]"
    python benchmarks/trpo_step.py --env Walker2d-v5 --updates 3   # the Zoo's MuJoCo settings

The settings are the Zoo's ``mujoco-defaults`` for TRPO (2 envs × 1024 steps, observations and
rewards normalised by ``VecNormalize``, cg_max_steps 25).
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

# sb3-contrib's names -> policygrad's, for SB3's MlpPolicy and make_actor_critic's MLPs.
PARAMETER_NAMES = {
    "actor.log_std": "log_std",
    "actor.net.layers.0.weight": "mlp_extractor.policy_net.0.weight",
    "actor.net.layers.0.bias": "mlp_extractor.policy_net.0.bias",
    "actor.net.layers.1.weight": "mlp_extractor.policy_net.2.weight",
    "actor.net.layers.1.bias": "mlp_extractor.policy_net.2.bias",
    "actor.net.layers.2.weight": "action_net.weight",
    "actor.net.layers.2.bias": "action_net.bias",
    "critic.net.layers.0.weight": "mlp_extractor.value_net.0.weight",
    "critic.net.layers.0.bias": "mlp_extractor.value_net.0.bias",
    "critic.net.layers.1.weight": "mlp_extractor.value_net.2.weight",
    "critic.net.layers.1.bias": "mlp_extractor.value_net.2.bias",
    "critic.net.layers.2.weight": "value_net.weight",
    "critic.net.layers.2.bias": "value_net.bias",
}


def compare_steps(venv: Any, updates: int, *, n_steps: int, target_kl: float = 0.01, cg_damping: float = 0.1,
                  cg_max_steps: int = 25, seed: int = 0) -> list[dict[str, float]]:
    """Run sb3-contrib's TRPO on ``venv`` for ``updates`` rollouts and compare each policy step
    with policygrad's on the same weights and data. Returns one record per update."""
    import torch
    from sb3_contrib import TRPO as SB3TRPO

    from policygrad.algorithms.trpo import TRPO, TRPOConfig
    from policygrad.policies.actor_critic import make_actor_critic
    from policygrad.types import Batch

    model = SB3TRPO("MlpPolicy", venv, n_steps=n_steps, batch_size=128, gamma=0.99, gae_lambda=0.95,
                    sub_sampling_factor=1, cg_max_steps=cg_max_steps, cg_damping=cg_damping, target_kl=target_kl,
                    n_critic_updates=1, learning_rate=1e-3, seed=seed, device="cpu")
    captured = []
    train = model.train

    def capturing_train() -> None:
        before = copy.deepcopy(model.policy.state_dict())
        data = next(model.rollout_buffer.get(batch_size=None))
        train()
        captured.append((before, data, copy.deepcopy(model.policy.state_dict())))

    model.train = capturing_train
    model.learn(n_steps * venv.num_envs * updates)

    dim = int(venv.action_space.shape[0])
    actor = [name for name in PARAMETER_NAMES if name.startswith("actor.")]
    records = []
    for before, data, after in captured:
        policy = make_actor_critic(venv.observation_space, venv.action_space)
        policy.load_state_dict({ours: before[theirs] for ours, theirs in PARAMETER_NAMES.items()})
        config = TRPOConfig(num_envs=venv.num_envs, num_steps=n_steps, minibatch_size=128, max_kl=dim * target_kl,
                            damping=dim * cg_damping, cg_iters=cg_max_steps, backend="torch")
        algorithm = TRPO(policy, config, total_updates=1)
        batch = Batch(observations=data.observations.float(), actions=data.actions.float(), action_masks=None,
                      old_log_probs=data.old_log_prob.float(), old_values=data.old_values.float(),
                      advantages=data.advantages.float(), returns=data.returns.float())
        metrics = algorithm._policy_step(batch)
        ours = {name: p.detach() for name, p in policy.named_parameters()}
        d_ours = torch.cat([(ours[n] - before[PARAMETER_NAMES[n]]).reshape(-1) for n in actor])
        d_sb3 = torch.cat([(after[PARAMETER_NAMES[n]] - before[PARAMETER_NAMES[n]]).reshape(-1) for n in actor])
        log_std_ours = ours["actor.log_std"] - before["log_std"]
        log_std_sb3 = after["log_std"] - before["log_std"]
        records.append({
            "norm_policygrad": float(d_ours.norm()),
            "norm_sb3_contrib": float(d_sb3.norm()),
            "cosine": float(d_ours @ d_sb3 / (d_ours.norm() * d_sb3.norm() + 1e-30)),
            "step_fraction": float(metrics["step_fraction"]),
            "log_std_step_ratio": float(log_std_ours.norm() / (log_std_sb3.norm() + 1e-30)),
        })
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    venv = VecNormalize(make_vec_env(args.env, n_envs=2, seed=args.seed))
    for k, record in enumerate(compare_steps(venv, args.updates, n_steps=1024, seed=args.seed)):
        print(json.dumps({"update": k, **{key: round(value, 6) for key, value in record.items()}}))


if __name__ == "__main__":
    main()
