"""The report: paper values, plotted numbers, written files, self-contained HTML, half-finished and empty studies."""
from __future__ import annotations

import base64
import json
import math
import re
import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from samscale.report import paper_gains, write_report
from samscale.report.figures import build_plots, gain_label, save_plot, with_paper
from samscale.report.render import NO_RUNS
from samscale.report.tables import format_value, markdown_table
from samscale.report.trend_text import default_text
from samscale.selection.select import SelectionRule, rho_table, select, summarize
from samscale.spec.run import build_spec
from samscale.store import RunStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RULE = SelectionRule(group_by=["data.label_noise"])
SIZES = {1: 1_000, 4: 12_000}  # MNIST-MLP k → n_params


def run(size: float, seed: int, optim: str, rho: float, noise: float, val: float, test: float,
        status: str = "complete") -> dict:
    metrics = {f"{epoch}_{name}": value for epoch in ("final", "best")
               for name, value in (("val_acc", val), ("test_acc", test), ("val_loss", 1 - val),
                                   ("test_loss", 1 - test))}
    return {
        "run_id": f"{optim}-{size}-{rho}-{noise}-{seed}", "status": status, "model.size": size,
        "optim.name": optim, "optim.rho": rho, "train.seed": seed, "data.label_noise": noise,
        "n_params": SIZES[size], "final_train_loss": 0.01 if optim == "sgd" else 0.02,
        "analysis.lambda_max": 50.0 if optim == "sgd" else 20.0, **metrics,
    }


def study(pending: bool) -> pd.DataFrame:
    """2 noise levels × 2 sizes × 2 seeds; SAM gains 1 + k/4 + noise·10 (+0.5 for seed 1) points at ρ = 0.05."""
    rows = []
    for noise in (0.0, 0.2):
        for size in SIZES:
            for seed in (0, 1):
                gain = 1 + size / 4 + noise * 10 + 0.5 * seed
                rows.append(run(size, seed, "sgd", 0.0, noise, 0.8, 0.8))
                rows.append(run(size, seed, "sam", 0.05, noise, 0.85, 0.8 + gain / 100))
                late = pending and size == 4 and seed == 1
                rows.append(run(size, seed, "sam", 0.2, noise, 0.82 if not late else math.nan,
                                0.99 if not late else math.nan, "pending" if late else "complete"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    frame = study(pending=True)
    page = write_report(out, title="MNIST MLP <test>", frame=frame, rule=RULE,
                        header={"command": "samscale reproduce mnist-mlp --budget smoke", "date": "2025-01-01"},
                        paper=paper_gains("mnist-mlp"), expected_seeds=2, notes=["substitute: none"])
    return out, page, frame


def test_paper_values_match_the_spec():
    mnist = paper_gains("mnist-mlp").set_index("size")
    assert mnist["gain"].to_dict() == {0.25: 0.073, 0.5: 0.063, 1: 0.180, 4: 0.190, 10: 0.187}
    cifar = paper_gains("cifar10-resnet18").set_index("size")
    assert list(cifar.index) == [4, 8, 16, 32, 64, 128, 256]
    assert tuple(cifar.loc[4, ["gain", "gain_low", "gain_high"]]) == pytest.approx((0.33, 0.30, 0.36))
    assert tuple(cifar.loc[128, ["gain", "gain_low", "gain_high"]]) == (1.23, 1.23, 1.23)
    imagenet = paper_gains("imagenet-resnet50")
    assert list(imagenet["size"]) == [16, 32, 48, 56, 64]
    assert list(imagenet["gain"]) == [0.03, 0.035, 0.175, 0.355, 0.54]
    synthetic = paper_gains("synthetic")
    assert list(synthetic["n_params"]) == pytest.approx([k * 1e4 for k in range(1, 11)])
    assert list(synthetic["gain"]) == [0.026, 0.029, 0.035, 0.047, 0.056, 0.062, 0.063, 0.074, 0.080, 0.083]
    assert set(synthetic["unit"]) == {"loss"} and synthetic["size"].isna().all()
    # the v2+ panels, by parameter count, with the bands read off the figure
    pos = paper_gains("pos-transformer")
    assert list(pos["n_params"]) == pytest.approx([5.5e6, 13.5e6, 23.7e6, 36.3e6, 51.3e6])
    assert list(zip(pos["gain"], pos["gain_low"], pos["gain_high"]))[0] == (-0.10, -0.38, 0.18)
    sst2 = paper_gains("sst2-lstm")
    assert list(sst2["gain"]) == [0.23, 0.27, 0.50, 1.22, 1.00, 1.15] and list(sst2["gain_high"])[-1] == 1.41
    gcn = paper_gains("graph-gcn", "ap")
    assert list(gcn["n_params"]) == pytest.approx([0.2e6, 0.7e6, 2.7e6]) and list(gcn["gain"]) == [-0.12, 0.235, 0.47]
    assert paper_gains("graph-gcn", "acc") is None  # AP values are never shown beside accuracy gains
    atari = paper_gains("atari-dqn", "return")
    assert list(atari["gain"]) == [28, 17, 163, 122] and list(atari["gain_low"]) == [8, -22, 98, 10]
    assert paper_gains("label-noise") is None


def test_plots_draw_the_summary_numbers_and_paper_values_at_our_sizes():
    frame = study(pending=False)
    selected = select(frame, RULE)
    summary = summarize(selected, RULE, expected_seeds=2)
    plots = {p.name: p for p in build_plots(summary, selected, rho_table(frame, RULE), RULE, paper_gains("mnist-mlp"))}
    assert set(plots) == {"gain_vs_params", "rho_star_vs_params", "test_acc_vs_params", "train_loss_vs_params",
                          "rho_sweep", "lambda_max_vs_params"}
    ax = plots["gain_vs_params"].figure.axes[0]
    clean = [line for line in ax.lines if line.get_label().startswith("label_noise")]
    assert [line.get_label() for line in clean] == ["label_noise=0.0", "label_noise=0.2"]
    # noise 0: k=1 → 1.25 + 0.25 avg over seeds = 1.5; k=4 → 2 + 0.25 = 2.25; noise 0.2 adds 2 points
    np.testing.assert_allclose(clean[0].get_xdata(), [1_000, 12_000])
    np.testing.assert_allclose(clean[0].get_ydata(), [1.5, 2.25])
    np.testing.assert_allclose(clean[1].get_ydata(), [3.5, 4.25])
    paper = next(c for c in ax.containers if c.get_label() == "paper (Shin et al.)")
    np.testing.assert_allclose(paper.lines[0].get_xdata(), [1_000, 12_000])  # k=1 and k=4 at our n_params
    np.testing.assert_allclose(paper.lines[0].get_ydata(), [0.180, 0.190])
    table = plots["gain_vs_params"].table
    clean_rows = table[table["data.label_noise"] == 0.0]
    assert clean_rows["paper_gain"].tolist() == [0.180, 0.190] and clean_rows["gain_mean"].tolist() == [1.5, 2.25]
    paper_only = table[table["n_seeds"].isna()]  # sizes we did not run are listed with the paper's value only
    assert paper_only["model.size"].tolist() == [0.25, 0.5, 10] and paper_only["n_params"].isna().all()
    rho = plots["rho_star_vs_params"].figure.axes[0]
    assert rho.get_yscale() == "log"
    np.testing.assert_allclose(rho.lines[0].get_ydata(), [0.05, 0.05])
    sweep = plots["rho_sweep"].figure.axes[0]
    np.testing.assert_allclose(sweep.lines[0].get_ydata(), [85.0, 82.0])  # validation %, ρ = 0.05 and 0.2


def test_report_writes_every_file_with_valid_images(report):
    out, page, frame = report
    assert page == out / "report.html"
    for name in ("report.md", "report.html", "runs.csv", "selected.csv", "summary.csv"):
        assert (out / name).is_file(), name
    pngs, svgs = sorted((out / "figures").glob("*.png")), sorted((out / "figures").glob("*.svg"))
    assert len(pngs) == len(svgs) == 6
    assert {p.stem for p in pngs} == {s.stem for s in svgs}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
    for svg in svgs:
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert len(pd.read_csv(out / "runs.csv")) == len(frame)
    summary = pd.read_csv(out / "summary.csv")
    assert summary["gain_mean"].tolist() == pytest.approx([1.5, 2.25, 3.5, 4.25])


def test_html_is_self_contained_with_figures_and_table_numbers(report):
    out, page, _ = report
    text = page.read_text()
    inlined = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(inlined) == 6
    assert base64.b64decode(inlined[0]) == (out / "figures" / "gain_vs_params.svg").read_bytes()
    assert not re.search(r"""(src|href)=["'](?!#|data:)""", text)  # nothing fetched from elsewhere
    assert "MNIST MLP &lt;test&gt;" in text  # title escaped
    for number in ("2.25", "4.25", "0.187", "12,000", "samscale reproduce mnist-mlp --budget smoke", "2025-01-01"):
        assert number in text, number
    markdown = (out / "report.md").read_text()
    assert "![Gain vs number of parameters](figures/gain_vs_params.png)" in markdown
    # headers in words; accuracies in %, gains in pp, each column at one precision
    assert ("| label noise | size | parameters | seeds | SGD test acc. (%) | SAM test acc. (%) | SAM − SGD (pp) | "
            "95% CI ± (pp) | ρ* | ρ* at grid edge | untuned ρ = 0.05 (pp) |") in markdown
    assert "| 0 | 4 | 12,000 | 2 | 80.00 | 82.25 | 2.250 | 3.177 | 0.05 | smallest tried | 2.250 |" in markdown
    assert ("ρ* = 0.05 is the smallest ρ tried at size = 1, label noise = 0.0; " in markdown
            and "the optimum may lie beyond the grid" in markdown)
    assert "baseline_test_acc_mean" not in markdown and "gain_mean" not in markdown
    assert "<th>SAM − SGD (pp)</th>" in text and "<th>SGD test acc. (%)</th>" in text


def test_half_finished_study_is_marked_partial(report):
    out, page, frame = report
    total, done = len(frame), int((frame["status"] == "complete").sum())
    assert (total, done) == (24, 22)
    assert f"{done} of {total} runs complete (2 pending, running or failed)" in page.read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["partial"].tolist() == [False, True, False, True]  # size 4 still has a pending run per noise
    assert "partial: runs missing" in (out / "figures" / "gain_vs_params.svg").read_text()


def test_study_without_complete_runs_still_renders(tmp_path):
    frame = study(pending=False).assign(status="pending")
    stale = tmp_path / "pending" / "figures" / "gain_vs_params.svg"  # left by an earlier build of the report
    stale.parent.mkdir(parents=True)
    stale.write_text("<svg/>")
    page = write_report(tmp_path / "pending", title="nothing yet", frame=frame, rule=RULE, header={})
    text = page.read_text()
    assert NO_RUNS in text and "0 of 24 runs complete (24 pending, running or failed)" in text
    assert "data:image" not in text and not list((tmp_path / "pending" / "figures").glob("*"))
    empty = write_report(tmp_path / "empty", title="empty", frame=pd.DataFrame(), rule=RULE, header={"a": "b"})
    assert "0 of 0 runs complete" in empty.read_text()
    assert (tmp_path / "empty" / "report.md").read_text().count(NO_RUNS) == 1


def test_saved_figures_are_byte_for_byte_reproducible(tmp_path):
    frame = study(pending=False)
    selected = select(frame, RULE)
    summary = summarize(selected, RULE)

    def draw(directory):
        plot = build_plots(summary, selected, rho_table(frame, RULE), RULE)[0]
        return [path.read_bytes() for path in save_plot(plot, tmp_path / directory)]

    assert draw("a") == draw("b")


def test_numbers_are_formatted_for_reading():
    assert format_value(11173962.0) == "11,173,962"
    assert format_value(0.186666) == "0.1867"
    assert format_value(float("nan")) == "–" and format_value(None) == "–"
    assert format_value([0.01, 0.05]) == "0.01, 0.05"
    assert format_value(np.bool_(True)) == "yes"
    assert markdown_table(pd.DataFrame({"a|b": ["x|y"]})) == "| a\\|b |\n|---|\n| x\\|y |"


def test_paper_values_without_a_size_are_placed_at_their_parameter_count():
    rule = SelectionRule(select_by="val_loss", metric="test_loss")
    ours = pd.DataFrame({"model.size": [8, 64], "n_params": [10_000, 80_000], "gain_mean": [0.01, 0.05]})
    table = with_paper(ours, paper_gains("synthetic"), rule)
    assert table["n_params"].tolist() == pytest.approx([10_000, 80_000, *[k * 10_000 for k in range(1, 11)]])
    assert table["paper_gain"].isna().tolist() == [True, True] + [False] * 10  # NaN sizes never match ours
    assert table["paper_gain"].tolist()[2:4] == [0.026, 0.029]
    assert gain_label(rule) == "SGD − SAM test loss"


def test_trend_json_is_written_per_group_and_stated_in_the_header(report):
    out, page, _ = report
    trend = json.loads((out / "trend.json").read_text())
    assert [g["group"] for g in trend["groups"]] == [{"data.label_noise": 0.0}, {"data.label_noise": 0.2}]
    for entry in trend["groups"]:
        assert set(entry) >= {"spearman", "p_value", "slope_per_decade", "slope_ci95", "n_sizes", "n_seeds"}
        assert entry["n_sizes"] == 2 and entry["spearman"] is None  # two sizes cannot show a trend
    text, markdown = page.read_text(), (out / "report.md").read_text()
    assert "trend (label noise = 0.2)" in markdown and "too few sizes/seeds to show a trend" in markdown
    assert "too few sizes/seeds to show a trend" in text


def test_three_sizes_give_a_trend_sentence_with_the_slope(tmp_path):
    rows = []
    for size, n_params in ((1, 1_000), (4, 10_000), (16, 100_000)):
        for seed in range(3):
            gain = {1: 0.1, 4: 0.3, 16: 0.5}[size] + 0.01 * seed
            rows.append(run(1, seed, "sgd", 0.0, 0.0, 0.8, 0.8) | {"model.size": size, "n_params": n_params,
                                                                   "run_id": f"sgd-{size}-{seed}"})
            rows.append(run(1, seed, "sam", 0.05, 0.0, 0.85, 0.8 + gain / 100) | {
                "model.size": size, "n_params": n_params, "run_id": f"sam-{size}-{seed}"})
    page = write_report(tmp_path, title="t", frame=pd.DataFrame(rows), rule=SelectionRule(), header={})
    entry = json.loads((tmp_path / "trend.json").read_text())["groups"][0]
    assert entry["group"] == {} and entry["spearman"] == pytest.approx(1.0)
    assert entry["slope_per_decade"] == pytest.approx(0.2) and entry["p_value"] == pytest.approx(1 / 3)
    low, high = entry["slope_ci95"]
    assert low <= 0.2 <= high and high - low < 0.05  # seeds differ by 0.01–0.02 pp only
    text = page.read_text()
    assert "the fitted slope is positive (its 95% interval excludes 0)" in text and "+0.200 pp per tenfold" in text
    assert "with 3 sizes the rank test cannot reach p &lt; 0.05" in text and "grows with size" not in text
    assert entry["verdict"] == "slope_only" and not entry["enough"]


def test_default_rho_outside_the_grid_is_said_and_left_empty():
    frame = study(pending=False)
    rule = SelectionRule(group_by=["data.label_noise"], default={"optim.rho": 0.1})
    summary = summarize(select(frame, rule), rule)
    assert summary["default_gain_mean"].isna().all() and not summary["default_in_grid"].any()
    assert default_text(rule, summary) == "ρ = 0.1 is not in this study's grid, so the untuned column is empty"
    in_grid = SelectionRule(group_by=["data.label_noise"])  # ρ = 0.05 by default, which the grid has
    assert summarize(select(frame, in_grid), in_grid)["default_gain_mean"].tolist() == pytest.approx(
        [1.5, 2.25, 3.5, 4.25])
    assert "ρ = 0.05, not tuned" in default_text(in_grid, summarize(select(frame, in_grid), in_grid))


def test_runs_frame_reads_specs_without_validation_and_matches_pydantic(tmp_path):
    store = RunStore(tmp_path / "s.db")
    specs = [build_spec({"optim": {"name": name, "rho": rho}, "model": {"size": size}, "train": {"seed": seed},
                         "data": {"options": {"k": [1, 2]}} if seed else {}})
             for name, rho in (("sgd", 0.05), ("sam", 0.2)) for size in (0.5, 2) for seed in (0, 1)]
    for spec in specs:
        store.register(spec, study="s", n_params=7)
    store.finish(store.claim(specs[0].run_id), "complete", {"final_test_acc": 0.5})
    store.record_analysis(specs[1].run_id, "lambda_max", 3.5)
    with sqlite3.connect(tmp_path / "s.db") as db:  # an older store: its spec lacks a field added since
        old = json.loads(db.execute("SELECT spec FROM runs WHERE run_id = ?", (specs[2].run_id,)).fetchone()[0])
        del old["runtime"]["bf16"]
        db.execute("UPDATE runs SET spec = ? WHERE run_id = ?", (json.dumps(old), specs[2].run_id))
    frame = store.runs_frame("s").set_index("run_id")
    for spec in specs:
        row = frame.loc[spec.run_id]
        assert row["label"] == spec.label()
        for key, value in spec.flat().items():
            assert row[key] == value or (isinstance(value, list) and list(row[key]) == value), key
    assert frame.loc[specs[0].run_id, "final_test_acc"] == 0.5
    assert frame.loc[specs[1].run_id, "analysis.lambda_max"] == 3.5
    assert frame.loc[specs[2].run_id, "runtime.bf16"] == False  # noqa: E712 - filled in by validation, not NaN
    assert set(frame.columns) >= {"epochs", "epochs_done", "attempts", "code_version", "n_params", "error"}
