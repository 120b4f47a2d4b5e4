"""The study report: CSV tables, trend.json, figures (PNG + SVG), report.md and one self-contained report.html.

A report is a pure rendering of a runs frame, so it can be rebuilt at any time, also from a half-finished study:
sizes with missing runs are marked partial and the header says how many runs are complete.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from samscale.fileio import write_csv, write_text
from samscale.report.columns import readable
from samscale.report.figures import Plot, build_plots, epoch_label, save_plot, with_paper
from samscale.report.tables import html_table, markdown_table
from samscale.report.trend_text import default_text, null_text, trend_sentences
from samscale.selection.null import PERMUTATIONS, selection_null
from samscale.selection.select import (
    ARMS, COMPLETE, DIVERGED, STATUSES, UNFINISHED, SelectionRule, prepare, rho_table, selected_frame, summarize,
)
from samscale.selection.trend import trend_table
from samscale.spec.metric import KINDS

FIGURE_DIR = "figures"
NO_RUNS = "No complete runs yet: nothing to compare or plot."
NO_PAIRS = "No size has a complete run of both arms yet: nothing to plot."
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } table.header td, table.header th { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.5rem; overflow-x: auto; } .warning { color: #a40; font-weight: bold; }
"""


@dataclass(frozen=True)
class _Figure:
    plot: Plot
    png: Path
    svg: Path


def progress_line(frame: pd.DataFrame) -> str:
    """'k of N runs complete', with the diverged and unfinished counts when there are any."""
    status = frame["status"] if "status" in frame else pd.Series([], dtype=object)
    done, total = int((status == COMPLETE).sum()), len(frame)
    extra = [f"{n} {what}" for n, what in [(int((status == DIVERGED).sum()), "diverged"),
                                           (int(status.isin(UNFINISHED).sum()), "pending, running or failed")] if n]
    return f"{done} of {total} runs complete" + (f" ({', '.join(extra)})" if extra else "")


def status_table(frame: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """Run counts per (group…, size) and status."""
    keys = [c for c in [*rule.group_by, rule.size_key] if c in frame]
    if frame.empty or "status" not in frame or not keys:
        return pd.DataFrame()
    counts = frame.groupby(keys, dropna=False)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in STATUSES if s in counts.columns])
    counts.columns.name = None
    return counts.reset_index()


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    frame: pd.DataFrame,
    rule: SelectionRule,
    header: dict[str, str],
    paper: pd.DataFrame | None = None,
    expected_seeds: int | None = None,
    notes: Iterable[str] = (),
) -> Path:
    """Write figures, summary.csv, selected.csv, runs.csv, trend.json, report.md and a self-contained report.html;
    return the HTML page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_complete = "status" in frame and bool((frame["status"] == COMPLETE).any())
    if has_complete:
        prep = prepare(frame, rule)
        selected = selected_frame(prep, rule)
        summary = summarize(selected, rule, expected_seeds, null=selection_null(frame, rule, prep=prep))
        plots = build_plots(summary, selected, rho_table(frame, rule, prep), rule, paper)
    else:
        selected, summary, plots = pd.DataFrame(), pd.DataFrame(), []
    trend = trend_table(summary, rule)
    for name, table in (("runs.csv", frame), ("selected.csv", selected), ("summary.csv", summary)):
        write_csv(out / name, table)
    write_text(out / "trend.json", json.dumps(trend, indent=2, allow_nan=False) + "\n")
    for stale in [*(out / FIGURE_DIR).glob("*.png"), *(out / FIGURE_DIR).glob("*.svg")]:
        stale.unlink()  # a rebuilt report shows only the figures its data supports now
    figures = [_Figure(plot, *save_plot(plot, out / FIGURE_DIR)) for plot in plots]
    header = {**header, "runs": progress_line(frame), "selection": _selection_text(rule, expected_seeds),
              "untuned default": default_text(rule, summary), "no-effect null": null_text(PERMUTATIONS, rule),
              **trend_sentences(trend, rule)}
    message = None if figures else (NO_PAIRS if has_complete else NO_RUNS)
    results = readable(_results(summary, rule, paper), rule) if len(summary) else pd.DataFrame()
    context = dict(title=title, header=header, notes=list(notes), figures=figures, message=message,
                   results=results, progress=readable(status_table(frame, rule), rule), rule=rule)
    write_text(out / "report.md", _markdown(**context))
    return write_text(out / "report.html", _html(**context))


def _results(summary: pd.DataFrame, rule: SelectionRule, paper: pd.DataFrame | None) -> pd.DataFrame:
    """The headline table: per size, both arms' test metric, the tuned gain with its interval, ρ*, the untuned
    default's gain, the no-effect expectation, and the paper's value."""
    columns = [*rule.group_by, rule.size_key, "n_params", "n_seeds",
               *[f"{arm}_{rule.metric}_mean" for arm in ARMS], "gain_mean", "gain_ci95", *rule.stars,
               *(["default_gain_mean"] if rule.default else []), "null_gain_mean", "null_p_value", "partial"]
    table = with_paper(summary[[c for c in columns if c in summary]], paper, rule)
    return table.drop(columns=[c for c in ("paper_low", "paper_high", "paper_note") if c in table])


def _selection_text(rule: SelectionRule, expected_seeds: int | None) -> str:
    tuned = ", ".join(rule.tune) or "nothing"
    groups = f"; kept apart by {', '.join(rule.group_by)}" if rule.group_by else ""
    seeds = f"; {expected_seeds} seeds expected per size" if expected_seeds else ""
    return (f"{tuned} chosen per size on the seed-mean {rule.select_by} (never on test), then every seed evaluated "
            f"at that choice; reported: {rule.metric} at the {epoch_label(rule)}{groups}{seeds}. {_units(rule)}; "
            "lines are means over seeds, bands mean ± sample std, the 95% CI is the Student-t half-width over seeds; "
            "hollow markers are partial sizes.")


def _units(rule: SelectionRule) -> str:
    """How the report's numbers are expressed, for the rule's metric."""
    if rule.measure.percent:
        return f"{KINDS[rule.measure.kind].words.capitalize()} in %, gains in percentage points (pp)"
    if rule.measure.kind == "return":
        return "Returns are mean undiscounted episode returns, gains differences of them"
    return "Losses as computed by the training objective, gains as differences of them"


def _markdown(*, title, header, notes, figures, message, results, progress, rule) -> str:
    lines = [f"# {title}", "", markdown_table(pd.DataFrame(list(header.items()), columns=["", "value"])), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    if message:
        lines += [f"**{message}**", ""]
    if len(results):
        lines += ["## Results", "", markdown_table(results), ""]
    for figure in figures:
        png, svg = (f"{FIGURE_DIR}/{path.name}" for path in (figure.png, figure.svg))
        lines += [f"## {figure.plot.title}", "", f"![{figure.plot.title}]({png})", "", f"[SVG]({svg})", "",
                  markdown_table(readable(figure.plot.table, rule)), ""]
    lines += ["## Runs by status", "", markdown_table(progress), "", "## Selection rule", "", "```json",
              rule.model_dump_json(indent=2), "```", ""]
    return "\n".join(lines)


def _html(*, title, header, notes, figures, message, results, progress, rule) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in header.items())
    parts = [f"<h1>{esc(title)}</h1>", f'<table class="header">{rows}</table>']
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>")
    if message:
        parts.append(f'<p class="warning">{esc(message)}</p>')
    if len(results):
        parts += ["<h2>Results</h2>", html_table(results)]
    for figure in figures:
        parts += [f"<h2>{esc(figure.plot.title)}</h2>",
                  f"<figure>{inline_svg(figure.svg, figure.plot.title)}</figure>",
                  html_table(readable(figure.plot.table, rule))]
    parts += ["<h2>Runs by status</h2>", html_table(progress), "<h2>Selection rule</h2>",
              f"<pre>{esc(rule.model_dump_json(indent=2))}</pre>"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def inline_svg(path: Path, alt: str) -> str:
    """The SVG embedded as a data URI: self-contained, and its element ids cannot clash with other figures'."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{data}">'

