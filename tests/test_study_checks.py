"""A study whose selection rule cannot work on its runs is refused at `sweep` time, before anything is written; YAML
exponent floats (`5e-2`) are numbers in specs, studies and `--set`."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from samscale.cli import main
from samscale.errors import ConfigError
from samscale.selection.study_checks import check_study
from samscale.spec.run import build_spec, load_spec, parse_override
from samscale.spec.study import load_study

STUDY = """
name: checks
base:
  data: {name: mnist1d, train_subset: 64, val_size: 32, augment: false}
  model: {family: mlp, size: 0.25}
  train: {epochs: 1}
grid: {model.size: [0.25, 0.5], train.seed: [0]}
arms:
  - {name: sgd, set: {optim.name: sgd}}
  - {name: sam, set: {optim.name: sam}, grid: {optim.rho: [5e-2, 1e-1]}}
selection: SELECTION
"""


def study_file(tmp_path, selection: str):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY).replace("SELECTION", selection))
    return path


@pytest.mark.parametrize("selection, field, words", [
    ("{baseline: {optim.name: usam}}", "selection.baseline", "matches no run of the study's arms"),
    ("{treatment: {optim.name: asam}}", "selection.treatment", "matches no run of the study's arms"),
    ("{treatment: {optim.rho: 0.3}}", "selection.treatment", "matches no run"),
    ("{baseline: {model.size: 0.25}, treatment: {optim.name: sam}}", "selection.baseline", "both match"),
    ("{tune: [optim.lr], default: {}}", "selection.tune names optim.lr", "no treatment arm varies it"),
    ("{default: {optim.rho: fast}}", "selection.default.optim.rho", "must be a number"),
    ("{default: {optim.rho: '0.05'}}", "selection.default.optim.rho", "must be a number"),
])
def test_unworkable_selection_is_refused_before_anything_is_written(tmp_path, capsys, selection, field, words):
    path = study_file(tmp_path, selection)
    out = tmp_path / "work"
    assert main(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
    err = capsys.readouterr().err
    assert field in err and words in err
    assert not out.exists()


def test_a_plain_sweep_without_a_selection_rule_is_not_checked(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(textwrap.dedent(STUDY).split("arms:")[0].replace("grid: {", "grid: {optim.name: [adam, sgd], "))
    path.write_text(path.read_text().replace("optim.name: [adam, sgd], ", "optim.base: [adam, adamw], "))
    check_study(load_study(path))  # SGD runs only, default rule (SGD vs SAM): nothing to compare, nothing refused
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(path.read_text() + "selection: {baseline: {optim.base: adam}, treatment: {optim.base: sgd}}\n")
    with pytest.raises(ConfigError, match=r"selection.treatment \{'optim.base': 'sgd'\} matches no run"):
        check_study(load_study(explicit))


def test_the_error_lists_what_the_arms_have(tmp_path):
    study = load_study(study_file(tmp_path, "{baseline: {optim.name: usam}}"))
    with pytest.raises(ConfigError, match=r"the arms have optim.name ∈ \{sam, sgd\}"):
        check_study(study)


def test_exponent_floats_are_numbers_in_studies_specs_and_overrides(tmp_path):
    assert yaml.safe_load("x: 5e-2")["x"] == "5e-2"  # what plain PyYAML (YAML 1.1) does
    study = load_study(study_file(tmp_path, "{default: {optim.rho: 5e-2}}"))
    assert study.selection.default == {"optim.rho": 0.05}
    assert sorted({spec.optim.rho for spec in study.expand() if spec.optim.name == "sam"}) == [0.05, 0.1]
    check_study(study)
    assert parse_override("optim.rho=5e-2") == ("optim.rho", 0.05)
    assert parse_override("optim.lr=1E-3") == ("optim.lr", 0.001)
    assert parse_override("data.name=mnist") == ("data.name", "mnist")
    assert parse_override("train.epochs=10") == ("train.epochs", 10)  # integers stay integers
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text("model: {family: mlp, size: 1e0}\noptim: {name: sam, rho: 5e-2, weight_decay: 5e-4}\n")
    spec = load_spec(spec_path, ["optim.lr=2e-2"])
    assert (spec.optim.rho, spec.optim.weight_decay, spec.optim.lr, spec.model.size) == (0.05, 5e-4, 0.02, 1.0)
    assert spec.run_id == build_spec({"model": {"family": "mlp", "size": 1.0},
                                      "optim": {"name": "sam", "rho": 0.05, "weight_decay": 0.0005,
                                                "lr": 0.02}}).run_id


def test_every_recipe_budget_passes_the_checks():
    from samscale.recipes import RECIPES, FunctionRecipe

    for name, recipe in RECIPES.items():
        if isinstance(recipe, FunctionRecipe):
            continue
        for budget in ("smoke", "cpu"):
            for _, study in recipe.studies(budget):
                check_study(study)
    check_study(load_study(Path(__file__).parents[1] / "examples" / "label_noise_study.yaml"))
