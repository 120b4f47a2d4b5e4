"""Shared fixtures: tiny, fast run specifications on data generated offline."""
import pytest
import torch

torch.set_num_threads(1)

TINY = {
    "data": {"name": "mnist1d", "train_subset": 384, "val_size": 128, "augment": False},
    "model": {"family": "mlp", "size": 0.25},
    "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    "schedule": {"kind": "step", "milestones": [0.5]},
    "train": {"epochs": 3, "batch_size": 64, "seed": 0},
    "runtime": {"threads": 1},
}


@pytest.fixture
def tiny_config():
    """A RunSpec dict that trains in well under a second."""
    import copy

    return copy.deepcopy(TINY)


def seed_study(name: str, tiny_config: dict, epochs: int = 2, seeds=(0, 1), train_subset: int | None = None):
    """A study of SGD runs of the tiny config, one per seed (the fault tests' workload)."""
    from samscale.spec.study import Study

    base = {**tiny_config, "train": {**tiny_config["train"], "epochs": epochs}}
    if train_subset:
        base["data"] = {**base["data"], "train_subset": train_subset}
    return Study.model_validate({"name": name, "base": base, "grid": {"train.seed": list(seeds)},
                                 "arms": [{"name": "sgd", "set": {"optim.name": "sgd"}}]})
