"""No file someone sends you runs code (issue 25): every loader of a torch.save file (bake --resume
state, eval/bake/train --weights, export-weights, average-snapshots, train --resume and its pool
state) is fed a harmless pickle payload through its public entry point; the payload's marker file
must never appear, and the command must refuse with a message naming the file."""
import json
import os
import pickle
import shutil

import pytest
import torch

from metaphys.cli import main
from metaphys.io.manifest import sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code the file carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a loader unpickled the payload: it ran code from the file"


def torch_payload(path, marker, **plain):
    """A torch.save file that looks like a snapshot/checkpoint but carries the payload."""
    torch.save({"ema": {"w": torch.zeros(1)}, "model": {}, "step": 1, **plain, "x": Payload(marker)}, path)
    return str(path)


def pickle_payload(path, marker):
    """A bare pickle (no torch zip) carrying the payload."""
    with open(path, "wb") as fh:
        pickle.dump({"ema": Payload(marker)}, fh)
    return str(path)


REFUSED = "refusing to load"


def _refused(capsys, path, code):
    err = capsys.readouterr().err
    assert code == 2, err
    assert REFUSED in err and str(path) in err and "Traceback" not in err, err


# ---- bake --resume --------------------------------------------------------------------------------------------
def _cloth(out, *extra):
    return main(["bake", "cloth", "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none",
                 *extra])


@pytest.fixture(scope="module")
def baked(tmp_path_factory, weights_path):
    """A finished 2-frame cloth bake, copied per test."""
    out = tmp_path_factory.mktemp("bake") / "o"
    assert _cloth(out, "--frames", "2") == 0
    return out


def test_bake_resume_refuses_a_swapped_state_file_before_loading_it(baked, tmp_path, marker, capsys):
    out = tmp_path / "o"
    shutil.copytree(baked, out)
    state = out / ".state" / "frame_00002.pt"
    torch.save({"u": Payload(marker)}, state)
    capsys.readouterr()
    assert _cloth(out, "--frames", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert f"the saved simulation state {state} is corrupted" in err and "--force instead of --resume" in err


@pytest.mark.parametrize("make", [torch_payload, pickle_payload])
def test_bake_resume_refuses_a_payload_even_with_a_matching_checksum(baked, tmp_path, marker, capsys, make):
    """A whole crafted bake folder: the manifest records the payload's own sha256."""
    out = tmp_path / "o"
    shutil.copytree(baked, out)
    state = out / ".state" / "frame_00002.pt"
    make(state, marker)
    m = json.loads((out / "manifest.json").read_text())
    m["frames"][-1]["state_sha256"] = sha256_file(state)
    (out / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    _refused(capsys, state, _cloth(out, "--frames", "3", "--resume"))


# ---- --weights ------------------------------------------------------------------------------------------------
def _with_metadata(path):
    """The metadata JSON that makes a file pass the weights checksum (an attacker can write it too)."""
    with open(os.path.splitext(path)[0] + ".json", "w") as fh:
        json.dump({"sha256": sha256_file(path)}, fh)
    return path


def test_eval_weights_refuses_a_payload(tmp_path, marker, capsys):
    w = torch_payload(tmp_path / "snap.pt", marker)
    _refused(capsys, w, main(["eval", "--weights", w, "--quick", "--out", str(tmp_path / "eval.md")]))
    assert not (tmp_path / "eval.md").exists()


def test_eval_weights_refuses_a_payload_with_a_matching_checksum(tmp_path, marker, capsys):
    w = _with_metadata(pickle_payload(tmp_path / "metamizer.pt", marker))
    _refused(capsys, w, main(["eval", "--weights", w, "--quick", "--out", str(tmp_path / "eval.md")]))


def test_bake_weights_never_unpickles(tmp_path, marker, capsys):
    w = _with_metadata(torch_payload(tmp_path / "metamizer.pt", marker))
    out = tmp_path / "o"
    assert _cloth(out, "--frames", "1", "--weights", w) == 2
    assert f"cannot load the Metamizer weights {w}" in capsys.readouterr().err


# ---- export-weights -------------------------------------------------------------------------------------------
def test_export_weights_refuses_a_payload_snapshot(tmp_path, marker, capsys):
    src = torch_payload(tmp_path / "ema_step0000001.pt", marker, hidden=4, padding_mode="zeros")
    out = tmp_path / "w.pt"
    _refused(capsys, src, main(["export-weights", src, "--out", str(out)]))
    assert not out.exists()


def test_export_weights_refuses_a_payload_checkpoint_beside_a_good_snapshot(tmp_path, marker, capsys):
    from metaphys.optim.metamizer import MetamizerNet
    src = tmp_path / "ema_step0000001.pt"
    torch.save({"ema": MetamizerNet(hidden=4).state_dict(), "step": 1, "hidden": 4, "padding_mode": "zeros"}, src)
    ckpt = torch_payload(tmp_path / "checkpoint.pt", marker)
    out = tmp_path / "w.pt"
    _refused(capsys, ckpt, main(["export-weights", str(src), "--out", str(out)]))
    assert not out.exists()


# ---- average-snapshots ----------------------------------------------------------------------------------------
def test_average_snapshots_refuses_a_payload(tmp_path, marker, capsys):
    from metaphys.optim.metamizer import MetamizerNet
    good = tmp_path / "ema_step0000001.pt"
    torch.save({"ema": MetamizerNet(hidden=4).state_dict(), "step": 1, "hidden": 4, "padding_mode": "zeros"}, good)
    bad = torch_payload(tmp_path / "ema_step0000002.pt", marker, hidden=4, padding_mode="zeros")
    out = tmp_path / "avg.pt"
    _refused(capsys, bad, main(["average-snapshots", str(good), bad, "--out", str(out)]))
    assert not out.exists()


# ---- train --resume / --init ----------------------------------------------------------------------------------
def _train(run, *extra):
    return main(["train", "--config", TINY, "--out", str(run), "--max-steps", "0", "--quiet", *extra])


def test_train_resume_refuses_a_payload_checkpoint(tmp_path, marker, capsys):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = torch_payload(run / "checkpoint.pt", marker, opt={}, elapsed=0.0)
    _refused(capsys, ckpt, _train(run, "--resume"))


def test_train_resume_refuses_a_payload_pool_state(tmp_path, marker, capsys):
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    run = tmp_path / "run"
    Trainer(TrainConfig.load(TINY), str(run)).save_checkpoint()
    pools = torch_payload(run / "pools.pt", marker)
    _refused(capsys, pools, _train(run, "--resume"))


def test_train_init_refuses_a_payload(tmp_path, marker, capsys):
    init = torch_payload(tmp_path / "init.pt", marker)
    _refused(capsys, init, _train(tmp_path / "run", "--init", init))


# ---- the loader itself ----------------------------------------------------------------------------------------
def test_load_plain_reads_what_metaphys_writes_and_names_damage(tmp_path):
    from metaphys.optim.weights_file import WeightsError, load_plain
    p = tmp_path / "ok.pt"
    torch.save({"t": torch.ones(2), "n": 3, "s": "x", "l": [1.5, None]}, p)
    assert load_plain(str(p))["l"] == [1.5, None]
    (tmp_path / "cut.pt").write_bytes(p.read_bytes()[:100])
    with pytest.raises(WeightsError, match=r"snapshot .*cut\.pt is not a readable torch file"):
        load_plain(str(tmp_path / "cut.pt"), "snapshot")
    torch.save({"x": Payload(tmp_path / "never")}, tmp_path / "obj.pt")
    with pytest.raises(WeightsError, match=r"obj\.pt: it holds Python objects other than tensors and plain "
                                           r"values \(it asks for io\.open\)"):
        load_plain(str(tmp_path / "obj.pt"))
    assert not (tmp_path / "never").exists()
    with pytest.raises(WeightsError, match=r"TorchScript archive"):
        load_plain(os.path.join(ROOT, "weights", "metamizer.pt"), "snapshot")
    with pytest.raises(WeightsError, match=r"snapshot .*missing\.pt not found"):
        load_plain(str(tmp_path / "missing.pt"), "snapshot")


def test_the_committed_training_checkpoint_loads_safely():
    """The CPU run resumes from training/cpu/checkpoint.pt: it must pass the safe loader."""
    from metaphys.optim.weights import load_snapshot
    path = os.path.join(ROOT, "training", "cpu", "checkpoint.pt")
    if not os.path.exists(path):
        pytest.skip("no committed training checkpoint")
    sd = load_snapshot(path)
    assert {"model", "ema", "opt", "step", "config"} <= set(sd) and isinstance(sd["step"], int)
