"""`stacking report SWEEP_DIR`: speed-up table, fitted laws and figures of one sweep, as files.

Writes into OUT (default SWEEP_DIR/report/):

    report.md       speed-up tables (mid and annealed readings), fitted laws with CIs, notes on what was skipped
                    and why, figures embedded
    speedups.csv    the speed-up tables (one row per target × op × direction × g × d × reading × budget fraction
                    × reference)
    speedup_runs.csv  the per-run pairs behind it (L*, FLOPs and tokens at L*, reason when not reached)
    losses.csv      final losses per target × method over seeds and each minus its own seed's scratch run's
                    (analysis/loss_table.py; with grown and scratch runs)
    losses_equal_flops.csv  with a grid's ``anneal.at_scratch_flops``: annealed losses at scratch's cooldown FLOPs,
                    each minus its own seed's scratch cooldown (no interpolation)
    downstream.csv  with a grid's ``eval:``: downstream scores per target × method × metric, each minus its own
                    seed's scratch run's, beside the loss difference (analysis/downstream.py)
    downstream_questions.csv  with per-question scores in those results: each paired score difference's seed CI
                    and its CI over resampled questions (analysis/question_bootstrap.py)
    val_bootstrap.csv  with runs' eval/val_docs.json (`stacking val-docs`): each paired loss difference's seed CI
                    and its CI over resampled validation documents (analysis/val_bootstrap.py)
    compute.csv     training and evaluation wall time per run kind, summed over finished runs (analysis/compute.py)
    fits.json       every fit: L(C) per method, Chinchilla L(N, D), IsoFLOP argmins, Eq. 2 (fitted and the paper's)
    figures/*.png   loss curves per target, speed-up bars (and annealed ones), L(C), IsoFLOP, Chinchilla

Each analysis runs only when the sweep has the data it needs: Chinchilla needs ≥ 2 target sizes, IsoFLOP
needs ≥ 3 growth timings d of one (target, op, g), Eq. 2 needs IsoFLOP argmins at ≥ 2 sizes and budgets, the
annealed reading needs cooldown runs. Cooldown runs enter no analysis but the annealed speed-ups.

Compute, then render: each part of the report is a function that returns a `Section` (markdown lines, the CSV
tables and figures it writes, notes, fits); `write_report` computes them, `render` puts their markdown in the
report's order, and the files are written last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from analysis import plots
from analysis.compute import compute_markdown, compute_table
from analysis.domain import domain_markdown, domain_table, has_eval_sets, plot_domain
from analysis.downstream import downstream_markdown, downstream_table, eval_settings
from analysis.loss_table import (
    EQUAL_FLOPS_TEXT,
    equal_flops_table,
    format_equal_flops_table,
    format_loss_table,
    loss_table,
)
from analysis.question_bootstrap import question_bootstrap_markdown, question_bootstrap_table
from analysis.report_fits import fitted_law_sections
from analysis.section import Figure, Section
from analysis.seed_spread import (
    check_reference,
    drift_warning,
    meta_path,
    mismatch_warning,
    provenance_text,
    read_meta,
)
from analysis.speedup import (
    BUDGET_FRACTIONS,
    TABLE_KEYS,
    all_seeds_note,
    compute_annealed_speedups,
    compute_speedups,
    format_table,
    headline,
    speedup_table,
)
from analysis.sweep import AnalysisError, load_sweep, lr_sweep_table, read_provenance, read_val_windows, to_jsonable
from analysis.val_bootstrap import RESAMPLES, val_bootstrap_section

SPEEDUP_DEFINITION = (
    "speed-up = FLOPs_scratch(L*) / FLOPs_grown(L*) − 1, FLOPs to first reach L* read on the running minimum of "
    "the curve (best loss so far), interpolating log-loss over log-FLOPs; the grown run's FLOPs include its "
    "base's FLOPs up to d. tokens ratio = tokens_scratch(L*) / (d + tokens_grown(L*)). p: L*_p is read at p × "
    "the scratch run's tokens. Mean and Student-t 95% CI over seeds (none with 1 seed); runs that never reach L* "
    "(or are already below it at their first point) are left out of the mean and counted in the note."
)
NO_COOLDOWNS = "no cooldown runs in this sweep: annealed reading not available"
WARNING = "WARNING: "  # a note that is a warning (the CLI prints it on stderr, not among the notes)


@dataclass
class Report:
    """What `write_report` produced."""

    path: Path  # report.md
    table: pd.DataFrame  # the main speed-up table: mid reading, L*_p of the scratch run (or the fixed L*)
    fits: dict
    table_own_final: pd.DataFrame | None = None  # L* = each grown run's own final loss (None with a fixed L*)
    notes: list[str] = field(default_factory=list)
    table_annealed: pd.DataFrame | None = None  # annealed reading (None without cooldown runs)
    headline: str = ""  # the first sentence of the speed-up section
    provenance: list[str] = field(default_factory=list)  # code commit, versions, data ids (plan.json)
    # notes that are warnings (also among the notes, as WARNING: …); the CLI prints them on stderr
    warnings: list[str] = field(default_factory=list)


@dataclass
class Speedups:
    """The speed-up tables a report returns and the seed-spread line quotes."""

    table: pd.DataFrame
    grown_table: pd.DataFrame | None
    annealed_table: pd.DataFrame | None
    headline: str


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    target_loss: float | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> Report:
    """Analyse a sweep dir and write report.md, speedups.csv, speedup_runs.csv, fits.json and figures/ (and the
    other sections' CSV files where the sweep has their data)."""
    sweep = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep.path / "report"
    speed, speedups = speedup_section(sweep, target_loss)
    fitted = fitted_law_sections(sweep, bootstrap, seed)
    spread = seed_spread_section(sweep, speedups) if target_loss is None else Section()
    body = [speed] + result_sections(sweep, bootstrap, seed)
    computed = [speed, *fitted, spread, *body[1:]]  # the order notes and figures are listed in
    notes = [n for s in computed for n in s.notes]
    warnings = [w for s in computed for w in s.warnings]
    figures = [f for s in computed for f in s.figures]
    prov = provenance_lines(sweep)
    md = render(sweep, speedups.headline, prov, [spread, *body], fitted, notes, figures)
    fits = {k: v for s in fitted for k, v in s.fits.items()}
    _write(out, computed, figures, fits)
    path = out / "report.md"
    path.write_text(md)
    return Report(
        path=path,
        table=speedups.table,
        fits=fits,
        notes=notes,
        table_own_final=speedups.grown_table,
        table_annealed=speedups.annealed_table,
        headline=speedups.headline,
        provenance=prov,
        warnings=warnings,
    )


def _write(out: Path, sections: list[Section], figures: list[Figure], fits: dict) -> None:
    """The sections' CSV files and figures, and fits.json, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for name, table in section.csv.items():
            table.to_csv(out / name, index=False)
    for f in figures:
        plots.save_figure(f.fig, out / "figures" / f.name)
    (out / "fits.json").write_text(json.dumps(to_jsonable(fits), indent=1, allow_nan=False) + "\n")


def render(
    sweep,
    headline_text: str,
    prov: list[str],
    body: list[Section],
    fitted: list[Section],
    notes: list[str],
    figures: list[Figure],
) -> str:
    """report.md: the header, the speed-up headline, the body sections (seed spread, speed-ups, losses,
    downstream, growth laws, LR sweep, domain), the fitted laws, the notes, the listed figures."""
    res = sweep.results
    counts = ", ".join(f"{k}: {v}" for k, v in res["kind"].value_counts().sort_index().items())
    n_done = int((res["status"] == "done").sum())
    lines = [
        f"# Sweep report: {sweep.path}",
        "",
        f"{len(res)} runs ({counts}); {n_done} done. Only finished runs are analysed.",
        "",
    ]
    if prov:
        lines += ["Provenance (plan.json): " + "; ".join(prov) + ".", ""]
    lines += ["## Speed-ups", "", headline_text, ""]
    for section in body:
        lines += section.markdown
    lines += ["## Fitted laws", ""]
    for section in fitted:
        lines += section.markdown
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Figures", ""]
    for f in figures:
        if f.listed:
            lines += [f"### {f.caption}", "", f"![{f.caption}](figures/{f.name})", ""]
    return "\n".join(lines)


# ---- sections ----------------------------------------------------------------------------------------------------
def speedup_section(sweep, target_loss: float | None, figures: bool = True) -> tuple[Section, Speedups]:
    """Speed-ups (mid reading at L*_p or a fixed L*, at the grown runs' own final loss, annealed reading): the
    tables, speedups.csv and speedup_runs.csv, the bar and loss-curve figures (unless ``figures`` is False)."""
    sec = Section()
    n_grown, n_scratch = len(sweep.runs("grown")), len(sweep.runs("scratch"))
    if n_grown == 0 or n_scratch == 0:
        sec.notes.append(f"speed-ups: skipped, the sweep has {n_grown} finished grown and {n_scratch} scratch runs")
    pairs = compute_speedups(sweep, target_loss=target_loss, fractions=BUDGET_FRACTIONS)
    table = speedup_table(pairs)
    reference = "fixed" if target_loss is not None else "scratch"
    tables, pairs_all = [table.assign(reference=reference)], [pairs.assign(reference=reference)]
    grown_table = None
    if target_loss is None and n_grown and n_scratch:
        grown_pairs = compute_speedups(sweep, reference="grown")
        grown_table = speedup_table(grown_pairs)
        tables.append(grown_table.assign(reference="grown"))
        pairs_all.append(grown_pairs.assign(reference="grown"))
    annealed_table = None
    if sweep.runs("cooldown").empty:
        sec.notes.append(NO_COOLDOWNS)
    else:
        annealed_pairs = compute_annealed_speedups(sweep)
        annealed_table = speedup_table(annealed_pairs)
        tables.append(annealed_table.assign(reference="scratch"))
        pairs_all.append(annealed_pairs.assign(reference="scratch"))
        if annealed_table.empty:
            sec.notes.append("annealed reading: no finished grown run has cooldown runs")
    order = TABLE_KEYS + ["reference"]
    speedups = pd.concat(tables, ignore_index=True)
    sec.csv["speedups.csv"] = speedups[order + [c for c in speedups.columns if c not in order]]
    sec.csv["speedup_runs.csv"] = pd.concat(pairs_all, ignore_index=True)
    main = table[(table["budget_fraction"] == 1.0) | table["budget_fraction"].isna()]
    lead = headline(main, "scratch's final loss" if target_loss is None else f"L* = {target_loss:g}")
    if figures:
        _speedup_figures(sec, sweep, table, annealed_table)
    sec.markdown = _speedup_markdown(table, grown_table, annealed_table, target_loss)
    return sec, Speedups(table, grown_table, annealed_table, lead)


def speedup_tables(sweep) -> pd.DataFrame:
    """speedups.csv as `stacking report` writes it (no figures): what a seed-spread reference holds
    (python -m analysis.reference)."""
    return speedup_section(sweep, None, figures=False)[0].csv["speedups.csv"]


def _speedup_figures(sec: Section, sweep, table: pd.DataFrame, annealed_table: pd.DataFrame | None) -> None:
    if len(table):
        sec.figure(
            plots.plot_speedups(table),
            "speedups.png",
            "Speed-up per operator at L*_p, mid reading (bars: mean, whiskers: 95% CI)",
        )
    if annealed_table is not None and len(annealed_table):
        sec.figure(
            plots.plot_speedups(annealed_table, title="annealed speed-up vs scratch"),
            "speedups_annealed.png",
            "Speed-up per operator at L*_f, annealed reading (bars: mean, whiskers: 95% CI)",
        )
    for target in sorted(sweep.runs()["target"].dropna().unique()):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(target))
        sec.figure(plots.plot_loss_curves(sweep, target), f"curves_{safe}.png", f"Loss curves, target {target}")


def seed_spread_section(sweep, speedups: Speedups) -> Section:
    """The grid's ``seed_spread`` line, right under the speed-up headline (`_seed_spread_lines`)."""
    sec = Section()
    tables = [t for t in (speedups.table, speedups.annealed_table) if t is not None]
    sec.markdown = _seed_spread_lines(sweep, pd.concat(tables), sec)
    return sec


def result_sections(sweep, bootstrap: int, seed: int = 0) -> list[Section]:
    """The sections after the speed-ups, each where the sweep has its data: final losses (grown and scratch runs),
    downstream scores (a grid's ``eval:``), the document bootstrap (runs with val_docs.json), growth laws, the LR
    sweep, domain and general loss."""
    out = []
    if len(sweep.runs("grown")) and len(sweep.runs("scratch")):
        losses = loss_table(sweep)
        sec = Section(
            markdown=[LOSSES_HEADING, "", LOSSES_TEXT, "", format_loss_table(losses), ""], csv={"losses.csv": losses}
        )
        equal = equal_flops_table(sweep)
        if len(equal):
            sec.markdown += [EQUAL_FLOPS_TEXT, "", format_equal_flops_table(equal), ""]
            sec.csv["losses_equal_flops.csv"] = equal
        out.append(sec)
        out.append(downstream_section(sweep, losses, seed=seed))
        out.append(val_bootstrap_section(sweep, seed=seed))
        out.append(growth_law_section(sweep, min(bootstrap, 100)))
    out.append(lr_sweep_section(sweep))
    out.append(domain_section(sweep))
    out.append(compute_section(sweep))
    return out


def compute_section(sweep) -> Section:
    """What the sweep cost: training and evaluation wall time per run kind (compute.csv, analysis/compute.py)."""
    table = compute_table(sweep)
    if table.empty:
        return Section()
    return Section(markdown=compute_markdown(table), csv={"compute.csv": table})


def downstream_section(sweep, losses: pd.DataFrame, seed: int = 0) -> Section:
    """Downstream scores paired by seed (analysis/downstream.py), where plan.json records a grid's ``eval:`` and
    the runs have results, with the question bootstrap where their records hold per-question scores
    (analysis/question_bootstrap.py); empty otherwise."""
    table = downstream_table(sweep, losses)
    if table.empty:
        return Section()
    sec = Section(markdown=downstream_markdown(table, eval_settings(sweep.path)), csv={"downstream.csv": table})
    questions = question_bootstrap_table(sweep, seed=seed)
    if not questions.empty:
        sec.markdown += question_bootstrap_markdown(questions, RESAMPLES, seed)
        sec.csv["downstream_questions.csv"] = questions
    return sec


G_BOUND_TEXT = (
    "Grown − scratch loss per g, paired by seed (95 % CI; * = CI below 0), and the largest g still "
    "significantly ahead of scratch (Klein, Hutter et al. 2026)."
)


def growth_law_section(sweep, bootstrap: int) -> Section:
    """The g-bound table (Klein, Hutter et al. 2026) and Liew & Kato's L(D1, D2) fits (analysis/growth_laws.py),
    as g_bound.csv / liew_kato.csv; a part that cannot be computed becomes a note."""
    from analysis.growth_laws import format_g_bound_table, format_liew_kato_summary, g_bound_table, liew_kato_summary

    sec = Section()
    try:
        bound = g_bound_table(sweep)
        sec.csv["g_bound.csv"] = bound
        sec.markdown += ["### Growth factor bound", "", G_BOUND_TEXT, "", format_g_bound_table(bound), ""]
    except AnalysisError as err:
        sec.notes.append(f"g-bound table: skipped ({err})")
    try:
        laws = liew_kato_summary(sweep.path, bootstrap=bootstrap)
        sec.csv["liew_kato.csv"] = laws
        sec.markdown += [
            "### L(D1, D2) = A·D1^−α1·D2^(−α2 + α3·ln D1) + E (Liew & Kato 2025)",
            "",
            f"Base tokens D1 = d, tokens after growth D2; bootstrap 95 % CIs over {bootstrap} resamples.",
            "",
            format_liew_kato_summary(laws),
            "",
        ]
    except AnalysisError as err:
        sec.notes.append(f"Liew & Kato fit: skipped ({err})")
    return sec


def lr_sweep_section(sweep) -> Section:
    """The LR sweep on scratch runs (lr_sweep.csv), where the sweep has one."""
    lrs = lr_sweep_table(sweep)
    if not len(lrs):
        return Section()
    return Section(markdown=_lr_sweep_markdown(lrs), csv={"lr_sweep.csv": lrs})


def domain_section(sweep) -> Section:
    """eval_data_dirs: domain gained vs general lost (LLaMA Pro's figure; analysis/domain.py), domain.csv."""
    if not has_eval_sets(sweep):
        return Section()
    dom = domain_table(sweep)
    sec = Section(markdown=domain_markdown(dom, "figures/domain.png" if len(dom) else None), csv={"domain.csv": dom})
    if len(dom):
        sec.figures.append(Figure(plot_domain(dom), "domain.png", listed=False))
    return sec


LOSSES_HEADING = "### Final losses, paired by seed"
LOSSES_TEXT = (
    "The plainest reading, beside the speed-ups (which read FLOPs at a loss and so magnify small loss gaps): each "
    "method's final validation loss (mid: the main run's last evaluation; annealed: its cooldown to 100 %), mean "
    "± 95 % CI half-width over seeds, and its loss minus its own seed's scratch run's (negative: growth is ahead; "
    "every seed counts, including those that never reach L*). Each run at its own budget: the same FLOPs as "
    "scratch when the grid sets `grown.total_flops`, else fewer for the grown runs than their scratch run."
)


def provenance_lines(sweep) -> list[str]:
    """How the sweep was made, from plan.json (analysis.sweep.read_provenance): the git commit, the software
    versions and the data id of every data dir; for plans written before versions and data ids were recorded,
    says so, and takes the data ids from the runs' val_windows.json instead. Empty without plan.json."""
    prov = read_provenance(sweep.path)
    if not prov:
        return []
    git = prov.get("git") or {}
    sha = git.get("sha")
    dirty = {True: " with uncommitted changes", False: "", None: ""}[git.get("dirty")]
    lines = [f"code: git {sha[:12]}{dirty}" if sha else "code: git commit not recorded"]
    ver = prov.get("versions")
    lines.append(
        "versions: " + ", ".join(f"{k} {v}" for k, v in ver.items())
        if ver
        else "versions: not recorded (plan.json predates them)"
    )
    data = prov.get("data")
    if data:
        lines += [f"data: {did} ({path})" for path, did in data.items()]
        return lines
    ids = set()
    for rel in sweep.results["run_dir"].dropna().astype(str):
        windows = read_val_windows(sweep.path / rel)
        if windows is not None:
            ids.add(windows.get("data_id"))
    lines.append(
        "data: "
        + (
            ", ".join(sorted(map(str, ids))) + " (from the runs' val_windows.json; plan.json predates data ids)"
            if ids
            else "not recorded"
        )
    )
    return lines


def _speedup_markdown(table, grown_table, annealed_table, target_loss) -> list[str]:
    """The speed-up section after its headline: the definition, the mid tables, the annealed table or note."""
    lines = [SPEEDUP_DEFINITION, "", "### Mid reading (the main runs' curves)", ""]
    if target_loss is not None:
        lstar = f"fixed L* = {target_loss:g}"
    else:
        ps = "/".join(f"{100 * p:g}" for p in BUDGET_FRACTIONS)
        lstar = f"L\\*_p = the matched scratch run's loss at p = {ps} % of its tokens (p = 100 %: its final loss)"
    lines += [f"**{lstar}**", "", format_table(table) if len(table) else "_no grown/scratch pairs_", ""]
    if grown_table is not None and len(grown_table):
        lines += [
            (
                "**L* = the grown run's own final loss** (the speed-up a slower method gets: negative when "
                "scratch reaches it first)"
            ),
            "",
            format_table(grown_table),
            "",
        ]
    lines += ["### Annealed reading (WSD cooldown branches)", ""]
    if annealed_table is None:
        lines += [NO_COOLDOWNS, ""]
    elif annealed_table.empty:
        lines += ["No finished grown run has cooldown runs: annealed reading not available.", ""]
    else:
        lines += [
            (
                "**L\\*_f = the matched scratch run's annealed loss at f** (its cooldown ending at p = f of its "
                "tokens); FLOPs_grown = first crossing of the grown run's annealed curve (its cooldowns' end "
                "points, running minimum)"
            ),
            "",
            format_table(annealed_table),
            "",
        ]
    return lines


def _seed_spread_lines(sweep, table: pd.DataFrame, sec: Section) -> list[str]:
    """The grid's ``seed_spread`` file (a seeded sweep's speedups.csv of the same configuration), quoted for every
    configuration of this sweep's table at the full budget: its mean speed-up, 95 % CI and seeds, mid and annealed,
    with how it was made and whether its runs are this sweep's (`_seed_spread_lead`)."""
    found = _seed_spread_file(sweep, sec.notes)
    if found is None:
        return []
    rel, path, source = found
    ref = pd.read_csv(path)
    ref = ref[ref["reference"] == "scratch"]
    keys = ["target", "op", "direction", "g", "grow_at_tokens", "reading", "budget_fraction"]
    mine = table[table["budget_fraction"] == 1.0]
    quoted = mine[keys].merge(ref, on=keys, how="inner")
    if quoted.empty:
        sec.notes.append(f"seed spread: {path} has no row for this sweep's configurations")
        return []
    parts = []
    for (op, g, d), grp in quoted.groupby(["op", "g", "grow_at_tokens"], sort=False):
        cells = []
        for _, r in grp.sort_values("reading", ascending=False).iterrows():
            if pd.isna(r["speedup"]):
                cells.append(f"{r['reading']}: never reaches L* ({r['n_runs']} seeds)")
                continue
            ci = (
                f", 95 % CI {100 * r['speedup_lo']:+.1f} % to {100 * r['speedup_hi']:+.1f} %"
                if pd.notna(r["speedup_lo"])
                else ""
            )
            bound = all_seeds_note(r)
            cells.append(
                f"{r['reading']} {100 * r['speedup']:+.1f} %{ci} ({r['n_reached']}/{r['n_runs']} seeds "
                f"reach L*{'; ' + bound if bound else ''})"
            )
        parts.append(f"{op} g={g:g} d={int(d):,}: " + "; ".join(cells))
    lead = _seed_spread_lead(sweep, rel, path, source, sec)
    return [f"{lead}, speed-up at the scratch run's final (mid) or annealed loss: " + " — ".join(parts) + ".", ""]


def _seed_spread_file(sweep, notes: list[str]) -> tuple[str, Path, Path] | None:
    """(the grid's ``seed_spread`` as written, the file read, where it lives beside the grid): an export's own copy
    first; None (and a note if it is missing) when the grid names none."""
    grid_file, plan = sweep.path / "grid.yaml", sweep.path / "plan.json"
    if not grid_file.is_file():
        return None
    rel = (yaml.safe_load(grid_file.read_text()) or {}).get("seed_spread")
    if not rel:
        return None
    grid_dir = Path(json.loads(plan.read_text())["grid"]).parent if plan.is_file() else Path.cwd()
    source = Path(rel) if Path(rel).is_absolute() else grid_dir / rel
    path = source
    if not Path(rel).is_absolute() and (sweep.path / rel).is_file():  # an export carries its own copy
        path = sweep.path / rel
    if not path.is_file():
        notes.append(f"seed spread: the grid's seed_spread file {path} is missing")
        return None
    return rel, path, source


def _seed_spread_lead(sweep, rel: str, path: Path, source: Path, sec: Section) -> str:
    """The seed-spread line's opening: the reference and how it was made (its sidecar, analysis/seed_spread.py). A
    warning (a note, and on stderr from the CLI) where its runs are configured differently from this sweep's runs of
    the same name, or have the same numerics and a final loss more than 1e-4 away (they do not reproduce here)."""
    meta = read_meta(path)
    made = f"`{rel}`, {provenance_text(meta)}"
    plain = f"Seed spread of this configuration, measured on a seeded sweep of it ({made})"
    hint = _shown(source)
    if meta is None:
        sec.notes.append(
            f"seed spread: `{rel}` has no sidecar {meta_path(path).name}, so nothing records how it was made or "
            f"checks that it describes this sweep's runs (python -m analysis.reference SWEEP_DIR {hint} writes both)"
        )
        return plain
    check = check_reference(sweep, meta)
    warnings = []
    if check.mismatched:
        warnings.append(mismatch_warning(check, rel, hint))
    if check.drifted:
        warnings.append(drift_warning(check, rel, hint, read_provenance(sweep.path), meta))
    if not check.compared:
        sec.notes.append(f"seed spread: no run of this sweep has a namesake among `{rel}`'s runs: nothing checked")
    sec.warnings += warnings
    sec.notes += [WARNING + w for w in warnings]
    if check.mismatched:
        return (
            f"Seed spread quoted from a seeded sweep of differently configured runs ({made}; see the warning in Notes)"
        )
    if check.drifted:
        return f"{plain[:-1]}; its runs do not reproduce here: see the warning in Notes)"
    return plain


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies under it (the command to rebuild it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _lr_sweep_markdown(lrs: pd.DataFrame) -> list[str]:
    """The LR sweep on scratch runs (lr_sweep.csv): one table per target × budget, the best LR named."""
    lines = ["## LR sweep (scratch runs alone)", ""]
    for (target, tokens), grp in lrs.groupby(["target", "tokens"], sort=False):
        key = "annealed_val_loss" if grp["annealed_val_loss"].notna().all() else "final_val_loss"
        best = grp.loc[grp[key].idxmin()]
        lines += [
            f"{target}, {int(tokens):,} tokens: lowest {key.replace('_', ' ')} at **LR {best['lr']:g}**.",
            "",
            "| LR | seeds | final val loss | best val loss | annealed (cooldown to 100 %) |",
            "|---|---|---|---|---|",
        ]
        for _, r in grp.iterrows():
            ann = "—" if pd.isna(r["annealed_val_loss"]) else f"{r['annealed_val_loss']:.4f}"
            lines.append(
                f"| {r['lr']:g} | {r['n_seeds']} | {r['final_val_loss']:.4f} | {r['best_val_loss']:.4f} | {ann} |"
            )
        lines.append("")
    return lines
