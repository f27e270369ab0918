"""A node of a Ray cluster lost mid-run (policygrad.distributed): in a module of its own, so that
no other test's cluster is connected when it starts its own (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from policygrad.runconfig import resolve_run

SMALL = {"num_envs": 4, "num_steps": 32, "minibatch_size": 64, "num_epochs": 2, "tensorboard": False}


@pytest.mark.slow
def test_a_lost_node_is_replaced_and_no_step_is_lost(tmp_path):
    """A cluster of a head without CPUs and two nodes (ray.cluster_utils), the node of worker 0
    lost mid-run (removed, and the workers on it killed, as when a machine goes): its workers come
    back on the other node, every step accounted for once."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'policygrad[ray]')")
    from ray.cluster_utils import Cluster

    from policygrad.training import build_session, train

    if ray.is_initialized():
        pytest.skip("another test's cluster is still connected")
    temp = tempfile.mkdtemp(prefix="pgrn-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # where Ray writes the cluster's address: private to this test
    os.makedirs(os.path.join(temp, "ray"))
    # The lost node is known dead after 2 missed health checks 0.5 s apart (Ray's default: 5 x 3 s).
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "temp_dir": temp,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 2}})
    try:
        nodes = [cluster.add_node(num_cpus=3), cluster.add_node(num_cpus=3)]
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        spec = resolve_run("ppo", "CartPole-v1", overrides=SMALL,
                           flags={"total_steps": 2048, "workers": 2, "address": "auto"})
        session = build_session(spec)
        lost = []

        class RemoveNode:
            def on_rollout_end(self, step):
                if step == 512:
                    collector = session.collector
                    node = next(n for n in nodes if n.node_id == collector.nodes[0])
                    pids = [pid for pid, x in collector.processes() if x == node.node_id]
                    lost.append(sum(x == node.node_id for x in collector.nodes))
                    # A machine lost: its Ray processes and the workers on it, all killed at once.
                    cluster.remove_node(node, allow_graceful=False)
                    for pid in pids:
                        _kill(pid)

        try:
            (tmp_path / "run").mkdir()
            summary = train(session, tmp_path / "run", quiet=True, callback=RemoveNode())
        finally:
            session.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)
    ledger = summary["ledger"]
    assert ledger["accepted_steps"] == 2048 and ledger["fragments"] == 32 and ledger["duplicates"] == 0
    assert ledger["replaced"] >= lost[0] >= 1


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # gone with its node already
        pass
