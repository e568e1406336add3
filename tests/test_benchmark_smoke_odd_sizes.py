"""benchmarks/smoke_odd_sizes.py: 2-D smoke with and without the U-Net's padding, in one run."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import smoke_odd_sizes  # noqa: E402
from metaphys.optim import unet  # noqa: E402


def test_a_small_run_compares_both_settings_and_restores_the_padding(tmp_path):
    out = tmp_path / "odd.md"
    assert smoke_odd_sizes.main(["--sizes", "20", "18", "--frames", "3", "--out", str(out)]) == 0
    rows = json.load(open(tmp_path / "odd.json"))["rows"]
    assert [r["size"] for r in rows] == [20, 18]
    control, odd = rows
    assert control["padded"]["median_msr"] == control["unpadded"]["median_msr"]   # a multiple of 4: no padding
    assert odd["padded"]["median_msr"] != odd["unpadded"]["median_msr"]           # the setting took effect
    assert unet.ALIGN == 4 and unet.UNet(hidden=4).align == 4
    assert "| 18² | 2 |" in out.read_text()
