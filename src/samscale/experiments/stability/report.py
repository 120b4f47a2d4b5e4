"""The stability experiment's report: report.md and one self-contained report.html (figures inlined as SVG), built
from the study reports' pieces (`samscale.report`): the same tables, figure files and page style."""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from samscale.fileio import write_text
from samscale.report.figures import Plot, save_plot
from samscale.report.render import FIGURE_DIR, PAGE_STYLE, inline_svg
from samscale.report.tables import html_table, markdown_table


@dataclass(frozen=True)
class ReportSection:
    """A heading, a sentence of explanation, a table and the figures that belong to it."""

    heading: str
    text: str
    table: pd.DataFrame
    plots: Sequence[Plot] = ()


def write_pages(
    out: str | Path,
    *,
    title: str,
    header: dict[str, str],
    notes: Sequence[str],
    sections: Sequence[ReportSection],
) -> Path:
    """Save every section's figures (PNG + SVG under `figures/`), write report.md and report.html; return the page."""
    out = Path(out)
    figures = out / FIGURE_DIR
    for stale in [*figures.glob("*.png"), *figures.glob("*.svg")]:
        stale.unlink()  # a rewritten report shows only the figures of this run
    saved = [[(plot, *save_plot(plot, figures)) for plot in section.plots] for section in sections]
    write_text(out / "report.md", _markdown(title, header, notes, sections, saved))
    return write_text(out / "report.html", _html(title, header, notes, sections, saved))


def _markdown(title, header, notes, sections, saved) -> str:
    lines = [f"# {title}", "", markdown_table(pd.DataFrame(list(header.items()), columns=["", "value"])), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    for section, figures in zip(sections, saved):
        lines += [f"## {section.heading}", "", section.text, "", markdown_table(section.table), ""]
        for plot, png, svg in figures:
            lines += [f"![{plot.title}]({FIGURE_DIR}/{png.name})", "", f"[SVG]({FIGURE_DIR}/{svg.name})", ""]
    return "\n".join(lines)


def _html(title, header, notes, sections, saved) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in header.items())
    parts = [f"<h1>{esc(title)}</h1>", f'<table class="header">{rows}</table>']
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>")
    for section, figures in zip(sections, saved):
        parts += [f"<h2>{esc(section.heading)}</h2>", f"<p>{esc(section.text)}</p>", html_table(section.table)]
        parts += [f"<figure>{inline_svg(svg, plot.title)}</figure>" for plot, _, svg in figures]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
