"""GPU path: bf16-mixed, compiled loss, MFU in the log. Marked `gpu`; skipped on machines without CUDA."""

import csv
import json

import pytest
import torch
from conftest import tiny_run_config

from stacking.train import run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_compiled_run_on_gpu_logs_mfu(tiny_data, tmp_path):
    s = run(
        tiny_run_config(
            tmp_path,
            tiny_data,
            accelerator="gpu",
            devices=1,
            precision="bf16-mixed",
            compile=True,
            chunked_loss=True,
            model="tiny-L4-D128",
            micro_batch_size=8,
            global_batch_tokens=2048,
            max_tokens=2048 * 20,
            val_every_tokens=2048 * 10,
        )
    )
    assert s["status"] == "done"
    with open(tmp_path / "run/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    name = torch.cuda.get_device_name()
    if any(k in name for k in ("H100", "H200", "A100")):  # devices in the peak table log MFU on every step row
        assert all(0 < float(r["mfu"]) < 1 for r in rows[1:])
    assert json.loads((tmp_path / "run/summary.json").read_text())["final_val_loss"] < float(rows[0]["val_loss"])
