"""The names a RunSpec may use, known without importing torch: datasets, model families, curvature analyses.

The spec is the ground floor of samscale, so it cannot ask the registries in `samscale.data`, `samscale.models` and
`samscale.hessian` (which import torch) what exists. These tuples are the authoritative list the spec validates
against; `tests/test_house.py` checks that each equals its registry, so adding a dataset or family means adding its
name here too.
"""
from __future__ import annotations

DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar10-standin",
    "imagenet",
    "mnist1d",
    "teacher-student",
    "least-squares",
    "sine-1d",
    "molecules",
    "solubility",
    "sst2",
    "sst2-standin",
    "pos",
    "pos-standin",
    "ogbg-molpcba",
)

FAMILY_NAMES: tuple[str, ...] = ("mlp", "resnet18", "resnet", "resnet50", "vit", "two_layer", "gcn", "dqn", "lstm",
                                "transformer")

ANALYSIS_NAMES: tuple[str, ...] = (
    "lambda_max",
    "trace",
    "frobenius",
    "moments",
    "density",
    "nonuniformity",
    "worst_case_sharpness",
    "average_case_sharpness",
)
