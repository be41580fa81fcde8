"""A real multi-node Ray cluster on this machine: a 2-worker trial spread over two nodes."""

import pytest

from lbt_study import Study, load_results
from lbt_study.study.cluster import SLOT
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # about 35 s on 2 cores


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "resources": {SLOT: 2}})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield c, {node.node_id for node in workers}
    finally:
        ray.shutdown()
        c.shutdown()


def test_two_worker_trial_runs_on_two_different_nodes(tmp_path, cluster):
    _, worker_node_ids = cluster

    def space(trial):
        return {"lr": trial.suggest_float("lr", 0.01, 0.1, log=True)}

    study = Study(name="spread", space=space, trials=1,
                  fixed={"model": "mlp", "norm": "sync_batch", "batch_size": 64, "epochs": 1,
                         "workers": 2, "placement_strategy": "SPREAD",
                         "gns_probe_examples": 256})
    checked = check_study(study)
    lines = []
    run_study(study, tmp_path, "maximize", max_trial_cpus=checked.max_trial_cpus,
              progress=lines.append)
    trials, history = load_results(tmp_path)
    assert trials.loc[0, "status"] == "ok", trials.loc[0, "error"]
    nodes = trials.loc[0, "worker_nodes"].split(",")
    print("worker nodes (rank 0, rank 1):", nodes)
    assert len(nodes) == 2 and nodes[0] != nodes[1]
    assert set(nodes) == worker_node_ids  # the two worker nodes, not the head
    assert (history["world_size"] == 2).all()
    assert (history["replica_spread"].abs() < 1e-6).all()
