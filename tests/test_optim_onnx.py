"""ONNX export: same steps as the TorchScript weights at any grid size (ONNX Runtime)."""
import numpy as np
import pytest
import torch

from metaphys.optim.metamizer import MetamizerNet
from metaphys.optim.onnx_export import export_onnx
from metaphys.optim.weights import export_torchscript, load_torchscript


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = MetamizerNet(hidden=4).eval()
    d = tmp_path_factory.mktemp("onnx")
    pt = str(d / "metamizer.pt")
    export_torchscript(net, pt)
    onnx_path = export_onnx(pt, str(d / "metamizer.onnx"))
    return pt, onnx_path


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 1, 20, 27), (3, 1, 64, 48)])
def test_onnx_matches_torchscript(exported, shape):
    import onnxruntime as ort  # in requirements.txt: a missing install is a failure, not a skip
    pt, onnx_path = exported
    sess = ort.InferenceSession(onnx_path)
    rng = np.random.default_rng(0)
    g, pg, ps = (rng.standard_normal(shape) for _ in range(3))
    s = rng.uniform(0.01, 1, shape[0])
    a_step, a_scale = sess.run(None, {"grad": g, "prev_grad": pg, "prev_step": ps, "scale": s})
    b_step, b_scale = load_torchscript(pt)(*(torch.tensor(v) for v in (g, pg, ps, s)))
    assert a_step.dtype == np.float64 and a_step.shape == shape
    assert np.abs(a_step - b_step.detach().numpy()).max() <= 1e-5 * np.abs(a_step).max()
    assert np.allclose(a_scale, b_scale.detach().numpy(), rtol=1e-5)
