"""Rollout workers on Ray: the environments of a run stepped in other processes or machines.

The learner stays one process. Each worker (:mod:`.worker`) is a Ray actor holding
``envs_per_worker`` of the run's ``num_envs`` environment copies and a copy of the policy, and
returns fragments of ``[num_steps, envs_per_worker]`` steps, each keyed by (worker, incarnation,
sequence number) and the policy version that collected it. :class:`.collector.WorkerCollector`
takes the place of the run's collector; the :class:`.ledger.Ledger`, saved in checkpoints,
accounts for every fragment trained on. See docs/scaling-out.md.

Only this package imports Ray, and only when a run has workers.
"""

from __future__ import annotations

from typing import Any

from policygrad.errors import InputError

__all__ = ["check_workers", "make_worker_collector"]


def check_workers(spec: Any) -> None:
    """InputError unless the run ``spec`` can train with its ``train.workers`` (when set):
    workers that divide num_envs (into envs_per_worker), an environment a worker can re-create,
    the built-in network, and for ``worker_mode = "async"`` an algorithm that corrects for lag."""
    from policygrad.algorithms import algorithm_class
    from policygrad.distributed.cluster import check_address

    tcfg = spec.train
    if tcfg.workers is None:
        return
    workers, copies = tcfg.workers, spec.config.num_envs
    if copies % workers:
        raise InputError(f"{workers} workers cannot share num_envs = {copies} environment copies evenly; "
                         "choose a divisor, or set envs_per_worker")
    if tcfg.envs_per_worker is not None and tcfg.envs_per_worker * workers != copies:
        raise InputError(f"workers x envs_per_worker = {workers * tcfg.envs_per_worker}, but the run has "
                         f"num_envs = {copies} environment copies")
    check_address(tcfg.address)
    if tcfg.worker_mode == "async" and not getattr(algorithm_class(spec.algo), "off_policy_correction", False):
        raise InputError(f"{spec.algo} has no correction for data collected by an older policy, so it cannot "
                         "use --mode async; use --mode sync, or ppo or impala")
    if spec.env.startswith("<"):
        raise InputError("rollout workers re-create the environment from its id or module:attr; an environment "
                         "object given in Python cannot be sent to them")
    if spec.policy is not None:
        raise InputError("rollout workers build the built-in network; a custom policy module cannot use workers")


def make_worker_collector(spec: Any, algorithm: Any, obs_normalizer: Any, reward_scaler: Any, device: Any) -> Any:
    """The :class:`.collector.WorkerCollector` of ``spec``, its workers started (Ray imported
    here, and a local cluster started for ``address = "local"``)."""
    from policygrad.distributed.cluster import Cluster
    from policygrad.distributed.collector import WorkerCollector

    cluster = Cluster(spec.train.address, spec.train.workers)
    try:
        return WorkerCollector(spec, algorithm, obs_normalizer, reward_scaler, cluster, device)
    except BaseException:
        cluster.close()
        raise
