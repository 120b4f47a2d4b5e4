"""Study reports: the paper's reference values, figures, and the Markdown + self-contained HTML report."""
from samscale.report.paper_values import paper_gains
from samscale.report.render import write_report

__all__ = ["paper_gains", "write_report"]
