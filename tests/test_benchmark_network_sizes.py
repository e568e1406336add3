"""benchmarks/network_sizes.py: the network alone across grid sizes, grouped by where the U-Net's
pyramid meets an odd side (issue #29)."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import network_sizes  # noqa: E402


def test_pyramid_kinds():
    assert network_sizes.odd_levels(64) == [] and network_sizes.kind_of(128) == "multiple of 16"
    assert network_sizes.odd_levels(100) == [2] and network_sizes.kind_of(100) == "odd at 1/4"   # 100, 50, 25, 12
    assert network_sizes.odd_levels(90) == [1, 3] and network_sizes.kind_of(90) == "odd at 1/2, 1/8"
    assert network_sizes.odd_levels(65)[0] == 0 and network_sizes.kind_of(65) == "odd size"


def test_a_small_sweep_writes_every_size_for_every_weights(tmp_path):
    out = tmp_path / "sizes.md"
    assert network_sizes.main(["--sizes", "32", "36", "--layouts", "2", "--iterations", "6", "--out", str(out)]) == 0
    data = json.load(open(tmp_path / "sizes.json"))
    label = data["labels"][0]
    assert [r["size"] for r in data["rows"]] == [32, 36]
    for r in data["rows"]:
        m = r[label]
        assert not m["diverged"] and m["mean_log10"] <= m["worst_log10"] < 0 and 0 <= m["below_1e-20"] <= 2
    text = out.read_text()
    assert "| 32² | multiple of 16 |" in text and "| 36² | odd at 1/4 |" in text


def test_sizes_the_unet_cannot_pool_are_refused():
    with pytest.raises(SystemExit):
        network_sizes.main(["--sizes", "8"])


def test_two_weights_of_the_same_name_get_two_columns(tmp_path):
    """The shipped weights beside a candidate exported as metamizer.pt: one column each (their names plus
    sha256 prefixes), not one column overwritten by the other."""
    import shutil
    from metaphys.optim.weights import DEFAULT_WEIGHTS
    a = tmp_path / "a" / "metamizer.pt"
    b = tmp_path / "b" / "metamizer.pt"
    a.parent.mkdir()
    b.parent.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, a)
    b.write_bytes(b"not the same bytes")
    labels = network_sizes.unique_labels([str(a), str(b)])
    assert labels[0] != labels[1] and all(lab.startswith("metamizer.pt ") for lab in labels)
    assert network_sizes.unique_labels([str(a), str(tmp_path / "x.pt")]) == ["metamizer.pt", "x.pt"]
    with pytest.raises(SystemExit):
        network_sizes.unique_labels([str(a), str(a)])
