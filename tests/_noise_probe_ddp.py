"""Worker functions of the gradient-noise-probe DDP test (importable: 'spawn' pickles them by
module and name; spawned with ``_ddp.spawn``)."""


def probe_runs(rank, configs):
    """For each config: the numeric and text columns of every reported row, and the final
    weights (what the single-process oracle in the test evaluates)."""
    from lbt_study.train import run_training
    from lbt_study.train.config import TrainConfig

    del rank
    results = []
    for config in configs:
        rows = []
        outcome = run_training(TrainConfig(**config), rows.append)
        keep = [{k: v for k, v in row.items() if isinstance(v, float | int | str) or v is None}
                for row in rows]
        state = {k: v.detach().clone() for k, v in outcome.model.state_dict().items()}
        results.append({"rows": keep, "state": state})
    return results
