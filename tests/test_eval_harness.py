"""`metaphys eval`: case selection and the plain / accelerated rows (quick sizes)."""
import pytest

from metaphys.eval.harness import TARGETS, run_eval


def test_only_selects_by_family_or_exact_size(shipped_optimizer):
    res = run_eval(shipped_optimizer.model, quick=True, only=["laplace32"], log=lambda *_: None)
    assert set(res) == {"laplace32", "laplace32_acc"}
    # the product's accelerated iteration is never worse at the end than the plain one here
    assert res["laplace32_acc"]["curve"][-1] <= res["laplace32"]["curve"][-1] * 10
    # a size prefix does not select larger sizes ("laplace100" is not "laplace1000")
    assert run_eval(shipped_optimizer.model, quick=True, only=["laplace3"], log=lambda *_: None) == {}


@pytest.mark.parametrize("name", ["wave_c2.0_ipt100", "burgers_mu0.3_ipt5", "fluid_Re32_ipt20"])
def test_every_target_has_an_accelerated_twin(name):
    names = {t[0] for t in TARGETS}
    assert name in names and name + "_acc" in names
