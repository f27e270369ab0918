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
    removed mid-run: its workers come back on the other node, every step accounted for once."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'policygrad[ray]')")
    from ray.cluster_utils import Cluster

    from policygrad.training import build_session, train

    if ray.is_initialized():
        pytest.skip("another test's cluster is still connected")
    temp = tempfile.mkdtemp(prefix="pgrn-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # where Ray writes the cluster's address: private to this test
    os.makedirs(os.path.join(temp, "ray"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp})
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
                    node = next(n for n in nodes if n.node_id == session.collector.nodes[0])
                    lost.append(sum(x == node.node_id for x in session.collector.nodes))
                    cluster.remove_node(node, allow_graceful=False)

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
