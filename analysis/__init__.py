"""Analysis of growth sweeps: results table → speed-ups, scaling-law fits, figures, report.

The modules, in the order the data flows (docs/analysis.md has the commands):

    sweep     read a sweep dir (results.csv + runs/*/metrics.csv); tidy tables for the fits
    speedup   FLOPs_scratch(L*) / FLOPs_grown(L*) − 1 per grown run at L*_p (mid and annealed readings), CIs
    fit       Chinchilla L(N, D) (Huber / LAD, 4500-start grid, bootstrap), L(C), IsoFLOP over d, Eq. 2
    lbfgs     the batched L-BFGS the fits run on
    domain    domain gained vs general lost per run (eval_data_dirs; LLaMA Pro's figure); imports matplotlib
    plots     matplotlib figures (imported on demand: `from analysis import plots`)
    report    `stacking report`: report.md, speedups.csv, fits.json, figures/
    cli       `stacking report` and `stacking fit-law` entry points

The names below are the public API; plots and report are not imported here so that `import analysis` does not
pull in matplotlib.
"""

from analysis.fit import (
    PAPER_EQ2,
    ChinchillaFit,
    Eq2,
    LossComputeFit,
    fit_chinchilla,
    fit_eq2,
    fit_isoflop,
    fit_loss_compute,
)
from analysis.speedup import (
    BUDGET_FRACTIONS,
    compute_annealed_speedups,
    compute_speedups,
    first_crossing,
    loss_at_fraction,
    speedup_from_curves,
    speedup_table,
)
from analysis.sweep import (
    AnalysisError,
    Sweep,
    chinchilla_points,
    compute_frontier,
    isoflop_points,
    load_sweep,
    loss_at_flops,
    loss_compute_points,
)

__all__ = [
    "BUDGET_FRACTIONS",
    "PAPER_EQ2",
    "AnalysisError",
    "ChinchillaFit",
    "Eq2",
    "LossComputeFit",
    "Sweep",
    "chinchilla_points",
    "compute_annealed_speedups",
    "compute_frontier",
    "compute_speedups",
    "first_crossing",
    "fit_chinchilla",
    "fit_eq2",
    "fit_isoflop",
    "fit_loss_compute",
    "isoflop_points",
    "load_sweep",
    "loss_at_flops",
    "loss_at_fraction",
    "loss_compute_points",
    "speedup_from_curves",
    "speedup_table",
]
