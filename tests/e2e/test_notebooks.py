"""The notebooks are thin readers of a sweep dir: each must run top to bottom on the committed fixture sweep,
and must be committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIXTURE = ROOT / "tests" / "fixtures" / "sweep_small"


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_operator_speedups.ipynb",
        "02_scaling_curves.ipynb",
        "03_growth_timing_factor.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_reads_its_sweep_from_a_parameter(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "SWEEP_DIR" in first_code.source and "STACKING_SWEEP_DIR" in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_fixture(path, monkeypatch):
    monkeypatch.setenv("STACKING_SWEEP_DIR", str(FIXTURE))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Every notebook shows at least one figure, and its tables name the operators of the fixture.
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no figure"
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "G_stack" in text or "toy-" in text
