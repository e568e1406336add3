"""benchmarks/odd_sizes.py: smoke and the Metamizer on cloth with and without the U-Net's padding, in one run."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import odd_sizes  # noqa: E402
from metaphys.optim import unet  # noqa: E402


def test_a_small_run_compares_both_settings_and_restores_the_padding(tmp_path):
    out = tmp_path / "odd.md"
    assert odd_sizes.main(["--sizes", "20", "18", "--frames", "3", "--cloth-sizes", "17",
                           "--drape-sizes", "17", "--drape-frames", "1", "--out", str(out)]) == 0
    data = json.load(open(tmp_path / "odd.json"))
    assert [r["size"] for r in data["smoke"]] == [20, 18]
    control, odd = data["smoke"]
    assert control["padded"]["median_msr"] == control["unpadded"]["median_msr"]   # a multiple of 4: no padding
    assert odd["padded"]["median_msr"] != odd["unpadded"]["median_msr"]           # the setting took effect
    (cloth,) = data["cloth"]
    assert cloth["size"] == 17 and set(cloth["padded"]) == set(cloth["unpadded"]) and len(cloth["padded"]) == 3
    assert cloth["padded"] != cloth["unpadded"]
    (drape,) = data["drape"]
    assert drape["size"] == 17 and drape["padded"] != drape["unpadded"] and 0 < drape["padded"] < 1
    assert unet.ALIGN == 4 and unet.UNet(hidden=4).align == 4
    text = out.read_text()
    assert "| 18² | 2 |" in text and "| 17² | 1 |" in text
