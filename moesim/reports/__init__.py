"""Reports: one self-contained HTML file of plotly figures and tables from a results table."""
from moesim.reports.data import ReportData
from moesim.reports.html import SECTIONS, render, write_report

__all__ = ["ReportData", "SECTIONS", "render", "write_report"]
