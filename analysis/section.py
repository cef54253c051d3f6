"""A part of `stacking report` (analysis/report.py), computed: compute, then render. Each section function returns a
`Section` — its markdown lines, the CSV tables and figures it writes, notes on what it skipped and why, its fits —
and `analysis.report.write_report` writes the files and renders report.md from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Figure:
    """A figure a section made, saved as figures/<name>."""

    fig: Any
    name: str
    caption: str = ""
    listed: bool = True
    """Shown under "Figures" with its caption (False: the section embeds it itself)."""


@dataclass
class Section:
    """One part of the report, computed: its markdown lines, the CSV tables and figures it writes, its notes (on
    what was skipped and why), its fits (fits.json) and its warnings."""

    markdown: list[str] = field(default_factory=list)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fits: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Notes that are warnings (also among ``notes``): the numbers quoted may mislead; the CLI prints them on stderr."""

    def figure(self, fig, name: str, caption: str) -> None:
        self.figures.append(Figure(fig, name, caption))


__all__ = ["Figure", "Section"]
