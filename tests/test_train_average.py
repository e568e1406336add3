"""Weight averaging of EMA snapshots: the average is exact, refuses what cannot be averaged, and
goes through `metaphys average-snapshots` and `metaphys export-weights` with its sources named."""
import json
import os

import pytest
import torch

from metaphys.cli import main as cli
from metaphys.optim.metamizer import MetamizerNet
from metaphys.train.average import AverageError, average_snapshots, snapshots_between


def _snapshot(path, step, seed, hidden=4):
    torch.manual_seed(seed)
    net = MetamizerNet(hidden=hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    torch.save({"ema": net.state_dict(), "step": step, "elapsed": 10.0 * step, "hidden": hidden,
                "padding_mode": "zeros"}, path)
    return net.state_dict()


def test_average_of_two_snapshots_is_their_midpoint(tmp_path):
    a = _snapshot(tmp_path / "ema_step0000020.pt", 20, 1)
    b = _snapshot(tmp_path / "ema_step0000010.pt", 10, 2)
    out = tmp_path / "avg.pt"
    r = average_snapshots([str(tmp_path / "ema_step0000020.pt"), str(tmp_path / "ema_step0000010.pt")], str(out))
    saved = torch.load(out, weights_only=True)
    assert [s["step"] for s in saved["averaged_from"]] == [10, 20]  # step order, whatever the argument order
    assert saved["step"] == 20 and saved["hidden"] == 4
    for k, v in a.items():
        if v.is_floating_point():
            torch.testing.assert_close(saved["ema"][k], (a[k].double() / 2 + b[k].double() / 2).float())
            assert not torch.equal(saved["ema"][k], a[k]) or torch.equal(a[k], b[k])
        else:
            assert torch.equal(saved["ema"][k], v)
    assert all(len(s["sha256"]) == 64 for s in r["averaged_from"])
    net = MetamizerNet(hidden=4)
    net.load_state_dict(saved["ema"])  # loads as the same network


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    _snapshot(tmp_path / "a.pt", 1, 1)
    _snapshot(tmp_path / "b.pt", 2, 2, hidden=6)
    with pytest.raises(AverageError, match="at least 2"):
        average_snapshots([str(tmp_path / "a.pt")], str(tmp_path / "o.pt"))
    with pytest.raises(AverageError, match="hidden"):
        average_snapshots([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")], str(tmp_path / "o.pt"))
    with pytest.raises(AverageError, match="not found"):
        average_snapshots([str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")], str(tmp_path / "o.pt"))
    sd = torch.load(tmp_path / "a.pt", weights_only=True)
    name = next(k for k, v in sd["ema"].items() if v.is_floating_point())
    sd["ema"][name] = sd["ema"][name].clone().fill_(float("nan"))
    sd["step"] = 3
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(AverageError, match="not finite in .*nan.pt"):
        average_snapshots([str(tmp_path / "a.pt"), str(tmp_path / "nan.pt")], str(tmp_path / "o.pt"))
    torch.save(sd["ema"], tmp_path / "raw.pt")
    with pytest.raises(AverageError, match="not an EMA snapshot"):
        average_snapshots([str(tmp_path / "a.pt"), str(tmp_path / "raw.pt")], str(tmp_path / "o.pt"))
    assert not os.path.exists(tmp_path / "o.pt")  # nothing half-written


def test_step_range_selects_the_run_snapshots(tmp_path):
    for step in (5, 10, 15, 20):
        _snapshot(tmp_path / f"ema_step{step:07d}.pt", step, step)
    paths = snapshots_between(str(tmp_path), 10, 15)
    assert [os.path.basename(p) for p in paths] == ["ema_step0000010.pt", "ema_step0000015.pt"]
    with pytest.raises(AverageError, match="no ema_step"):
        snapshots_between(str(tmp_path), 100, 200)


def test_cli_averages_and_the_model_card_names_the_sources(tmp_path, capsys):
    for step in (10, 20, 30):
        _snapshot(tmp_path / f"ema_step{step:07d}.pt", step, step)
    out = tmp_path / "avg.pt"
    assert cli(["average-snapshots", "--run", str(tmp_path), "--steps", "10:20", "--out", str(out)]) == 0
    assert "2 snapshots (steps 10..20)" in capsys.readouterr().out
    assert cli(["average-snapshots", "--run", str(tmp_path), "--steps", "10:30", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(["average-snapshots", "--run", str(tmp_path), "--steps", "ten", "--out", str(tmp_path / "x.pt")]) == 2
    assert "FIRST:LAST" in capsys.readouterr().err
    assert cli(["average-snapshots", "--run", str(tmp_path), "--out", str(tmp_path / "y.pt")]) == 2
    assert "needs --steps" in capsys.readouterr().err
    weights = tmp_path / "w.pt"
    assert cli(["export-weights", str(out), "--out", str(weights)]) == 0
    card = json.loads((tmp_path / "w.json").read_text())
    assert [s["step"] for s in card["training"]["averaged_from"]] == [10, 20]
    assert "held_out_scores" not in card["training"]


def test_an_average_of_an_average_names_every_source(tmp_path):
    """A weighted mix (one snapshot with the average of a stretch) is built by averaging an
    average; the result names the stretch inside its second source."""
    a = _snapshot(tmp_path / "ema_step0000001.pt", 1, 1)
    for step in (10, 20):
        _snapshot(tmp_path / f"ema_step{step:07d}.pt", step, step)
    tail = average_snapshots(snapshots_between(str(tmp_path), 10, 20), str(tmp_path / "tail.pt"))
    mix = average_snapshots([str(tmp_path / "ema_step0000001.pt"), str(tmp_path / "tail.pt")], str(tmp_path / "mix.pt"))
    assert [s["step"] for s in mix["averaged_from"][1]["averaged_from"]] == [10, 20]
    k = next(k for k, v in a.items() if v.is_floating_point())
    torch.testing.assert_close(mix["ema"][k], (0.5 * a[k].double() + 0.5 * tail["ema"][k].double()).float())
