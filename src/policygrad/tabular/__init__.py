"""Finite MDPs: exact J, V, Q, d and ∇J of tabular softmax policies, and a Gymnasium environment.

The ground truth against which policy-gradient estimators are checked, in three criteria:
``"episodic"``, ``"discounted"`` and ``"average"`` reward (see :mod:`policygrad.tabular.mdp`);
continuing tasks with known optimal average reward in :mod:`policygrad.tabular.tasks`.
"""

from policygrad.tabular.env import FiniteMDPEnv, FiniteMDPVectorEnv, policy_table
from policygrad.tabular.exact import (
    ExactSolution,
    PolicyValues,
    evaluate_policy,
    exact_solution,
    objective,
    relative_value_iteration,
    softmax_policy,
    value_iteration,
)
from policygrad.tabular.mdp import (
    SETTINGS,
    FiniteMDP,
    example_mdp,
    load_mdp_json,
    random_mdp,
    validate_setting,
    validate_theta,
)
from policygrad.tabular.tasks import (
    access_control_decode,
    access_control_mdp,
    access_control_state,
    optimal_average_policy,
    optimal_average_reward,
    recycling_robot_mdp,
    river_swim_mdp,
)

__all__ = [
    "SETTINGS",
    "FiniteMDP",
    "load_mdp_json",
    "validate_setting",
    "validate_theta",
    "example_mdp",
    "random_mdp",
    "PolicyValues",
    "ExactSolution",
    "softmax_policy",
    "evaluate_policy",
    "exact_solution",
    "objective",
    "value_iteration",
    "relative_value_iteration",
    "FiniteMDPEnv",
    "FiniteMDPVectorEnv",
    "policy_table",
    "access_control_mdp",
    "access_control_state",
    "access_control_decode",
    "recycling_robot_mdp",
    "river_swim_mdp",
    "optimal_average_reward",
    "optimal_average_policy",
]
