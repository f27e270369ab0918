"""One update of policygrad against Stable-Baselines3's, on identical weights and data.

SB3 (or sb3-contrib) collects each rollout and takes its update; before the update, its policy's
weights and the rollout (observations, actions, log-probabilities, advantages, returns) are copied
into policygrad's actor-critic, which takes its own update on them. The two changes of the
parameters should be the same vector once the settings are converted between the libraries'
conventions (docs/training.md, "Algorithms"):

- ``trpo``: sb3-contrib averages a Gaussian's KL over the D action dimensions, so policygrad runs
  with ``max_kl = D·target_kl`` and ``damping = D·cg_damping``. Every update is compared (the
  step depends on no optimiser state). The settings are the Zoo's MuJoCo ones (2 envs × 1024
  steps, cg_max_steps 25).
- ``a2c``: SB3's critic loss is mean (V − R)², policygrad's ½ mean (V − R)², so policygrad runs
  with ``vf_coef`` twice SB3's. The settings are the Zoo's A2C MuJoCo ones (4 envs × 8 steps,
  gSDE from log σ = −2, PyTorch's default initialisation, RMSprop at 9.6e-4, gradient norm
  clipped at 0.5); only the first update is compared, as RMSprop's state differs afterwards.

Printed per update, for the actor's and the critic's parameters: the two changes' norms and their
cosine (and for TRPO the ratio of the log σ steps).

    pip install -e ".[bench,mujoco]"
    python benchmarks/sb3_steps.py trpo --env Walker2d-v5 --updates 3
    python benchmarks/sb3_steps.py a2c --env Walker2d-v5
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

# SB3's names -> policygrad's, for SB3's MlpPolicy and make_actor_critic's MLPs.
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


def _capture(model: Any, updates: int) -> list[tuple[dict, Any, dict]]:
    """Run ``model`` for ``updates`` rollouts; (weights before, the rollout, weights after) of each."""
    captured = []
    train = model.train

    def capturing_train() -> None:
        before = copy.deepcopy(model.policy.state_dict())
        data = next(model.rollout_buffer.get(batch_size=None))
        train()
        captured.append((before, data, copy.deepcopy(model.policy.state_dict())))

    model.train = capturing_train
    model.learn(model.n_steps * model.env.num_envs * updates)
    return captured


def _batch(data: Any) -> Any:
    from policygrad.types import Batch

    return Batch(observations=data.observations.float(), actions=data.actions.float(), action_masks=None,
                 old_log_probs=data.old_log_prob.float(), old_values=data.old_values.float(),
                 advantages=data.advantages.float(), returns=data.returns.float())


def _record(policy: Any, before: dict, after: dict) -> dict[str, float]:
    """Norms and cosine of the two updates, for the actor's and the critic's parameters."""
    import torch

    ours = {name: p.detach() for name, p in policy.named_parameters()}
    record = {}
    for part in ("actor", "critic"):
        names = [n for n in PARAMETER_NAMES if n.startswith(part + ".")]
        d_ours = torch.cat([(ours[n] - before[PARAMETER_NAMES[n]]).reshape(-1) for n in names])
        d_sb3 = torch.cat([(after[PARAMETER_NAMES[n]] - before[PARAMETER_NAMES[n]]).reshape(-1) for n in names])
        record[f"{part}_norm_policygrad"] = float(d_ours.norm())
        record[f"{part}_norm_sb3"] = float(d_sb3.norm())
        record[f"{part}_cosine"] = float(d_ours @ d_sb3 / (d_ours.norm() * d_sb3.norm() + 1e-30))
    log_std_ours = ours["actor.log_std"] - before["log_std"]
    log_std_sb3 = after["log_std"] - before["log_std"]
    record["log_std_step_ratio"] = float(log_std_ours.norm() / (log_std_sb3.norm() + 1e-30))
    return record


def compare_trpo(venv: Any, updates: int, *, n_steps: int, target_kl: float = 0.01, cg_damping: float = 0.1,
                 cg_max_steps: int = 25, seed: int = 0) -> list[dict[str, float]]:
    """sb3-contrib's TRPO on ``venv`` for ``updates`` rollouts, each policy step compared with
    policygrad's (the critic is not compared: TRPO fits it after the step)."""
    from sb3_contrib import TRPO as SB3TRPO

    from policygrad.algorithms.trpo import TRPO, TRPOConfig
    from policygrad.policies.actor_critic import make_actor_critic

    model = SB3TRPO("MlpPolicy", venv, n_steps=n_steps, batch_size=128, gamma=0.99, gae_lambda=0.95,
                    sub_sampling_factor=1, cg_max_steps=cg_max_steps, cg_damping=cg_damping, target_kl=target_kl,
                    n_critic_updates=1, learning_rate=1e-3, seed=seed, device="cpu")
    dim = int(venv.action_space.shape[0])
    records = []
    for before, data, after in _capture(model, updates):
        policy = make_actor_critic(venv.observation_space, venv.action_space)
        policy.load_state_dict({ours: before[theirs] for ours, theirs in PARAMETER_NAMES.items()})
        config = TRPOConfig(num_envs=venv.num_envs, num_steps=n_steps, minibatch_size=128, max_kl=dim * target_kl,
                            damping=dim * cg_damping, cg_iters=cg_max_steps, backend="torch")
        metrics = TRPO(policy, config, total_updates=1)._policy_step(_batch(data))
        record = {k: v for k, v in _record(policy, before, after).items() if k.startswith(("actor", "log_std"))}
        records.append({**record, "step_fraction": float(metrics["step_fraction"])})
    return records


def compare_a2c(venv: Any, *, n_steps: int = 8, vf_coef: float = 0.4, backend: str = "torch",
                seed: int = 0) -> dict[str, float]:
    """SB3's A2C (gSDE, the Zoo's MuJoCo settings) on ``venv``: its first update compared with
    policygrad's with ``vf_coef`` doubled."""
    from stable_baselines3 import A2C as SB3A2C

    from policygrad.algorithms import make_algorithm, make_config
    from policygrad.policies.actor_critic import make_actor_critic

    model = SB3A2C("MlpPolicy", venv, n_steps=n_steps, gamma=0.99, gae_lambda=0.9, vf_coef=vf_coef, ent_coef=0.0,
                   max_grad_norm=0.5, learning_rate=9.6e-4, use_sde=True, normalize_advantage=False, seed=seed,
                   device="cpu", policy_kwargs=dict(log_std_init=-2.0, ortho_init=False))
    [(before, data, after)] = _capture(model, 1)
    policy = make_actor_critic(venv.observation_space, venv.action_space, use_sde=True, log_std_init=-2.0,
                               ortho_init=False)
    policy.load_state_dict({ours: before[theirs] for ours, theirs in PARAMETER_NAMES.items()})
    config = make_config("a2c", {"num_envs": venv.num_envs, "num_steps": n_steps, "learning_rate": 9.6e-4,
                                 "gae_lambda": 0.9, "vf_coef": 2 * vf_coef, "max_grad_norm": 0.5, "use_sde": True,
                                 "log_std_init": -2.0, "ortho_init": False, "backend": backend})
    make_algorithm("a2c", policy, config, total_updates=1).optimise(_batch(data))
    return _record(policy, before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo", choices=["trpo", "a2c"])
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--updates", type=int, default=3, help="TRPO: rollouts compared")
    parser.add_argument("--backend", default="torch", choices=["torch", "numpy"], help="A2C: policygrad's backend")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    if args.algo == "trpo":
        venv = VecNormalize(make_vec_env(args.env, n_envs=2, seed=args.seed))
        records = compare_trpo(venv, args.updates, n_steps=1024, seed=args.seed)
    else:
        venv = VecNormalize(make_vec_env(args.env, n_envs=4, seed=args.seed))
        records = [compare_a2c(venv, backend=args.backend, seed=args.seed)]
    for k, record in enumerate(records):
        print(json.dumps({"update": k, **{key: round(value, 6) for key, value in record.items()}}))


if __name__ == "__main__":
    main()
