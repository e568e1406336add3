"""The U-Net pads sides that are not a multiple of 4 and crops its output back (issue #29: the network
alone stalled at 63², 99², 101², sizes odd at full or half resolution)."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from metaphys.cli import main as cli
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.unet import ALIGN, UNet
from metaphys.optim.weights import export_torchscript, load_torchscript, sha256_of


def _unaligned(unet: UNet) -> UNet:
    """The same network with the padding off (align 1): the forward before the change."""
    unet.align = 1
    return unet


@pytest.mark.parametrize("sides", [(21, 30), (63, 65), (33, 16)])
def test_odd_sides_run_as_the_padded_field_cropped(sides):
    torch.manual_seed(0)
    unet = UNet(hidden=4).eval()
    assert unet.align == 4
    x = torch.randn(2, 3, *sides)
    with torch.no_grad():
        o_d, o_s = unet(x)
        pad = []
        for s in sides:
            pad = [0, (-s) % ALIGN] + pad
        ref_d, ref_s = _unaligned(unet)(F.pad(x, pad))
    assert ALIGN == 4 and o_d.shape == (2, 1, *sides)
    ref_d = ref_d[(Ellipsis,) + tuple(slice(0, s) for s in sides)]
    assert torch.equal(o_d, ref_d) and torch.equal(o_s, ref_s)


@pytest.mark.parametrize("dims,sides", [(2, (32, 100)), (2, (36, 44)), (3, (16, 20, 24))])
def test_sides_that_are_multiples_of_4_run_exactly_as_before(dims, sides):
    torch.manual_seed(1)
    unet = UNet(hidden=4, dims=dims).eval()
    x = torch.randn(1, 3, *sides)
    with torch.no_grad():
        a = unet(x)
        b = _unaligned(unet)(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_3d_network_keeps_its_sides():
    """Measured worse padded (optim/unet.py docstring): a 3-D U-Net runs odd sides as they are."""
    torch.manual_seed(4)
    unet = UNet(hidden=4, dims=3).eval()
    assert unet.align == 1
    x = torch.randn(1, 3, 17, 18, 19)
    with torch.no_grad():
        o_d, _ = unet(x)
    assert o_d.shape == (1, 1, 17, 18, 19)


def test_a_circular_network_keeps_its_sides():
    """Zero padding would break a periodic field's wrap-around: circular networks are not padded."""
    torch.manual_seed(2)
    unet = UNet(hidden=4, padding_mode="circular").eval()
    x = torch.randn(1, 3, 33, 35)
    with torch.no_grad():
        assert torch.equal(unet(x)[0], _unaligned(unet)(x)[0])


def test_the_shipped_network_alone_solves_an_odd_size(weights_path):
    """63² (odd at full resolution): 50 plain iterations reach <= 1e-20 on held-out layouts; without
    the padding the same weights stop near 1e-9 (benchmarks/results/network_sizes.md)."""
    from metaphys.eval.quick import held_out
    from metaphys.optim.fast import eager_from_any
    from metaphys.optim.solve import solve
    net = eager_from_any(load_torchscript(weights_path))
    finals = {}
    for align in (ALIGN, 1):
        net.unet.align = align
        res = solve(held_out("laplace", 4, 63, k=3), Metamizer(net), iterations=50, accelerate=0)
        finals[align] = res.history()[-1]
    assert float(finals[ALIGN].max()) <= 1e-20
    assert float(finals[1].min()) > 1e3 * float(finals[ALIGN].max())   # what the padding buys


def test_export_weights_reexports_torchscript_keeping_the_model_card(tmp_path, capsys):
    torch.manual_seed(3)
    net = MetamizerNet(hidden=4).eval()
    src = str(tmp_path / "old.pt")
    export_torchscript(net, src, {"training": {"step": 7}, "note": "the card's note"})
    out = str(tmp_path / "new" / "metamizer.pt")
    assert cli(["export-weights", src, "--out", out]) == 2
    assert "needs --reason" in capsys.readouterr().err
    assert cli(["export-weights", src, "--out", out, "--reason", "U-Net pads to 4"]) == 0
    card = json.load(open(os.path.join(tmp_path, "new", "metamizer.json")))
    source_card = json.load(open(os.path.join(tmp_path, "old.json")))
    assert list(card)[:len(source_card)] == list(source_card)   # the card's own order of fields
    assert card["training"] == {"step": 7} and card["note"] == "the card's note"
    assert card["reexported_from"] == [{"file": "old.pt", "sha256": sha256_of(src), "reason": "U-Net pads to 4"}]
    assert card["sha256"] == sha256_of(out) and card["parameters"] == sum(p.numel() for p in net.parameters())
    old, new = load_torchscript(src), load_torchscript(out)
    args = (torch.randn(1, 1, 36, 40, dtype=torch.float64),) * 3 + (torch.full((1,), 0.05, dtype=torch.float64),)
    assert torch.equal(old(*args)[0], new(*args)[0])
    # a file that does not match its card is refused, not re-exported under a new checksum
    with open(src, "ab") as fh:
        fh.write(b"x")
    assert cli(["export-weights", src, "--out", str(tmp_path / "x.pt"), "--reason", "r"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_export_weights_refuses_torchscript_that_is_not_metamizer_weights(tmp_path, capsys):
    solver = os.path.join(os.path.dirname(__file__), "..", "weights", "metamizer_solver.pt")
    assert cli(["export-weights", solver, "--out", str(tmp_path / "w.pt"), "--reason", "r"]) == 2
    assert "not Metamizer weights" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "w.pt")
