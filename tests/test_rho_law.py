"""ρ* as a law of size: interpolation in log ρ, the fitted slope and its interval (coverage measured on simulated
studies with a planted law), the μP-global slope, leave-one-size-out scoring, and the page from a synthetic store."""
import json
import math

import numpy as np
import pytest
import yaml

from samscale.cli import main
from samscale.selection.rho_law import SizePoint, fit_law, interpolate_log_rho
from samscale.spec.study import Study
from samscale.sweep.sweep import prepare
from samscale.workdir import store_path

GRID = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
PLANTED_B = -0.25


def curve(log_grid, log_rho_star, shape="parabola"):
    """A validation-accuracy curve in log ρ peaking at ρ*: a parabola, or asymmetric (steeper above ρ*)."""
    d = log_grid - log_rho_star
    if shape == "parabola":
        return 95 - 8 * d ** 2
    return 95 - 8 * np.where(d > 0, 2.0 * d ** 2, 0.7 * d ** 2) - np.abs(d) ** 3


def simulated_study(rng, *, shape="parabola", sigma=0.3, tau=0.0, n_sizes=5, loso=False, b=PLANTED_B):
    """Sizes over 1.5 decades of width (#params ∝ width²), ρ* on the planted law (± τ per size), seed noise σ/√3."""
    widths = np.logspace(0, 1.5, n_sizes)
    n_params = 1e5 * widths ** 2
    x = np.log10(n_params)
    a = math.log10(0.1) - b * x.mean() + rng.uniform(-0.3, 0.3)
    log_grid = np.log10(GRID)
    points = []
    for i in range(n_sizes):
        truth = curve(log_grid, a + b * x[i] + tau * rng.normal(), shape)
        val = truth + rng.normal(0, sigma / math.sqrt(3), len(GRID))
        test = truth + rng.normal(0, sigma / math.sqrt(3), len(GRID))
        log_rho, censored, best = interpolate_log_rho(log_grid, val)
        points.append(SizePoint(float(widths[i]), float(n_params[i]), GRID, list(val), list(test), log_rho, censored,
                                best))
    return fit_law(points, task="simulated", ladder="width", widths=list(widths), loso=loso)


def test_interpolation_finds_the_vertex_and_flags_grid_ends():
    log_grid = np.log10(GRID)
    log_rho, censored, best = interpolate_log_rho(log_grid, curve(log_grid, math.log10(0.07)))
    assert log_rho == pytest.approx(math.log10(0.07), abs=1e-9) and not censored and GRID[best] == 0.05
    log_rho, censored, _ = interpolate_log_rho(log_grid, curve(log_grid, math.log10(3.0)))
    assert censored and log_rho == pytest.approx(0.0)  # peak beyond the grid: the end value, flagged
    log_rho, censored, _ = interpolate_log_rho(np.log10([0.05, 0.2]), np.array([90.0, 91.0]))
    assert censored and log_rho == pytest.approx(math.log10(0.2))  # two values cannot be interpolated


@pytest.mark.parametrize("shape, sigma, tau", [("parabola", 0.3, 0.0), ("asymmetric", 0.3, 0.1),
                                               ("asymmetric", 1.0, 0.0)])
def test_slope_interval_covers_the_planted_law_at_the_nominal_rate(shape, sigma, tau):
    rng = np.random.default_rng(20)
    fits = [simulated_study(rng, shape=shape, sigma=sigma, tau=tau) for _ in range(1000)]
    with_interval = [f for f in fits if f.b_ci is not None]
    assert len(with_interval) >= 900  # censored studies (ρ* at a grid end) print no interval
    coverage = np.mean([f.b_ci[0] <= PLANTED_B <= f.b_ci[1] for f in with_interval])
    assert 0.93 <= coverage <= 0.975
    assert abs(np.mean([f.b for f in with_interval]) - PLANTED_B) < 0.02


def test_p_values_reject_a_true_null_at_the_nominal_rate():
    rng = np.random.default_rng(21)
    constant = [f for f in (simulated_study(rng, b=0.0) for _ in range(1000)) if f.p_b_zero is not None]
    mup = [f for f in (simulated_study(rng, b=-0.25, shape="asymmetric") for _ in range(1000)) if f.p_b_mup is not None]
    assert len(constant) >= 900 and len(mup) >= 900
    assert 0.025 <= np.mean([f.p_b_zero < 0.05 for f in constant]) <= 0.07  # b = 0 planted
    assert 0.025 <= np.mean([f.p_b_mup < 0.05 for f in mup]) <= 0.07  # b = b_μP = −¼ planted


def test_no_interval_without_enough_sizes_or_grid():
    rng = np.random.default_rng(1)
    few = simulated_study(rng, n_sizes=3)
    assert few.b is not None and few.b_ci is None and "3 sizes" in few.no_interval
    two = [SizePoint(s, 1e4 * s ** 2, [0.05, 0.2], [90.0, 91.0 - s], [89.0, 90.0], 0.0, True, 0) for s in range(1, 6)]
    for p in two:
        p.log_rho, p.censored, p.best_index = interpolate_log_rho(np.log10(p.grid), np.array(p.val))
    fit = fit_law(two, task="t", ladder="width", widths=[1, 2, 3, 4, 5])
    assert fit.b_ci is None and "grid of 2 values" in fit.no_interval


def test_mup_global_is_minus_a_quarter_per_decade_when_params_grow_as_width_squared():
    fit = simulated_study(np.random.default_rng(3), sigma=0.0)
    assert fit.b_mup == pytest.approx(-0.25)
    assert fit.b == pytest.approx(PLANTED_B, abs=1e-9)  # exact parabolas: the vertex is exact
    assert fit.p_b_mup is not None


def test_leave_one_size_out_scores_the_exact_law_at_no_loss():
    fit = simulated_study(np.random.default_rng(4), sigma=0.0, n_sizes=6, loso=True)
    assert fit.loso["law"]["val_lost"] == pytest.approx(0.0, abs=1e-12)
    assert fit.loso["mup"]["val_lost"] == pytest.approx(0.0, abs=1e-12)  # planted b equals μP-global here
    assert fit.loso["constant"]["val_lost"] > 0  # ρ* moves by 0.75 decades: a constant ρ misses the ends
    rows = [r for r in fit.loso_rows if r["predictor"] == "constant"]
    first = rows[0]
    assert first["val_lost"] == pytest.approx(
        fit.sizes[0].val[fit.sizes[0].best_index] - fit.sizes[0].val[GRID.index(first["grid_rho"])])


STUDY = {
    "name": "planted",
    "base": {"data": {"name": "mnist", "val_size": 1000, "augment": False}, "model": {"family": "mlp"},
             "train": {"epochs": 1}},
    "grid": {"model.size": [0.25, 0.5, 1, 2, 4, 8], "train.seed": [0, 1]},
    "arms": [{"name": "sgd", "set": {"optim.name": "sgd"}},
             {"name": "sam", "set": {"optim.name": "sam"}, "grid": {"optim.rho": GRID}}],
    "selection": {"baseline": {"optim.name": "sgd"}, "treatment": {"optim.name": "sam"}, "tune": ["optim.rho"],
                  "select_by": "val_acc", "metric": "test_acc"},
}


def planted_store(folder, b=-0.3, noise=0.002, study=STUDY):
    """A study folder whose SAM runs' accuracies peak at ρ* = 0.1 · (#params / 10⁵)^b (fractions, like runs)."""
    study = Study.model_validate(study)
    store, specs = prepare(study, folder)
    rng = np.random.default_rng(0)
    from samscale.models.registry import param_count

    for spec in specs:
        if spec.model.family == "mlp":
            n = param_count("mlp", spec.model.size, input_shape=(1, 28, 28), num_classes=10)
        else:
            n = 10 ** 5 * spec.model.size
        log_star = math.log10(0.1) + b * (math.log10(n) - 5)
        acc = lambda: 0.9 if spec.optim.name == "sgd" else float(  # noqa: E731
            curve(np.log10([spec.optim.rho]), log_star)[0] / 100 + rng.normal(0, noise))
        store.finish(store.claim(spec.run_id), "complete", final={"n_params": n, "final_val_acc": acc(), "final_test_acc": acc()})
    return folder


def test_rho_law_command_recovers_a_planted_law_from_a_store(tmp_path, capsys):
    folder = planted_store(tmp_path / "study")
    assert main(["rho-law", str(folder)]) == 0
    out = folder / "rho-law"
    data = json.loads((out / "rho_law.json").read_text())
    (task,) = data["tasks"]
    assert task["ladder"] == "width" and len(task["sizes"]) == 6
    assert task["b"] == pytest.approx(-0.3, abs=0.05)
    assert task["b_ci"][0] <= -0.3 <= task["b_ci"][1]
    assert set(task["loso"]) == {"law", "constant", "mup"}
    assert (out / "rho_law.png").is_file() and "b 95% CI" in (out / "report.md").read_text()
    assert "rho law" in (out / "report.html").read_text()


def test_rho_law_refuses_bad_folders_with_status_2(tmp_path, capsys):
    assert main(["rho-law", str(tmp_path)]) == 2
    assert "not a finished study folder" in capsys.readouterr().err
    assert main(["rho-law", str(tmp_path), str(tmp_path)]) == 2  # several folders need --out
    assert "--out" in capsys.readouterr().err


def test_depth_ladders_are_fitted_apart_and_get_no_mup_prediction(tmp_path):
    depth = dict(STUDY, name="deep", base=dict(STUDY["base"], model={"family": "resnet"}),
                 grid={"model.size": [10, 18, 34], "train.seed": [0, 1]})
    planted_store(tmp_path / "deep", study=depth)
    planted_store(tmp_path / "wide")
    assert main(["rho-law", str(tmp_path / "deep"), str(tmp_path / "wide"), "--out", str(tmp_path / "page")]) == 0
    tasks = json.loads((tmp_path / "page" / "rho_law.json").read_text())["tasks"]
    by_ladder = {task["ladder"]: task for task in tasks}
    assert set(by_ladder) == {"depth", "width"} and len(tasks) == 2
    assert by_ladder["depth"]["b_mup"] is None and by_ladder["width"]["b_mup"] is not None
    assert "3 sizes" in by_ladder["depth"]["no_interval"]  # too few sizes for a calibrated interval


def test_unfinished_sizes_are_left_out_and_diverged_rho_never_chosen(tmp_path):
    from samscale.store import RunStore

    folder = planted_store(tmp_path / "study")
    store = RunStore(store_path(folder))
    frame = store.runs_frame()
    sam = frame[frame["optim.name"] == "sam"]
    store.reset([sam[sam["model.size"] == 8]["run_id"].iloc[0]])  # the largest size is still training
    small = sam[sam["model.size"] == 0.25]
    best = small.loc[small["final_val_acc"].idxmax()]
    store.reset([best["run_id"]])
    store.finish(store.claim(best["run_id"]), "diverged")  # its best ρ diverged on one seed
    assert main(["rho-law", str(folder)]) == 0
    (task,) = json.loads((folder / "rho-law" / "rho_law.json").read_text())["tasks"]
    assert [p["size"] for p in task["sizes"]] == [0.25, 0.5, 1, 2, 4]
    first = task["sizes"][0]
    assert first["grid"][first["best_index"]] != best["optim.rho"]
