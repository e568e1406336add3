"""The README's set-up (`make build`): metaphys is installed into the venv (editable), so scripts in any
folder import it and the `metaphys` command works; the venv sees no system site-packages, so tests
cannot pass on what a fresh machine lacks."""
import os
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
in_venv = pytest.mark.skipif(sys.prefix == sys.base_prefix,
                             reason="runs in the venv that `make build` sets up (.venv/bin/python -m pytest)")


def _clean_env():
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the install finds metaphys


@in_venv
def test_import_metaphys_from_another_folder(tmp_path):
    script = tmp_path / "my_script.py"
    script.write_text("import metaphys, metaphys.io\nprint(metaphys.__file__)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd="/tmp",
                       env=_clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.dirname(r.stdout.strip()) == os.path.join(ROOT, "metaphys")  # this checkout, editable


@in_venv
def test_metaphys_command_runs_from_another_folder(tmp_path):
    command = os.path.join(sysconfig.get_path("scripts"), "metaphys")
    assert os.path.isfile(command), f"{command} missing: run make build"
    r = subprocess.run([command, "bake", "cloth", "--out", str(tmp_path / "o"), "--frames", "-1"],
                       capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert r.returncode == 2 and "--frames must be >= 1" in r.stderr, r.stderr[-2000:]


@in_venv
def test_venv_does_not_see_system_site_packages():
    with open(os.path.join(sys.prefix, "pyvenv.cfg")) as fh:
        cfg = {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in fh.read().splitlines() if "=" in line)}
    assert cfg["include-system-site-packages"] == "false"
    assert not [p for p in sys.path if "dist-packages" in p], sys.path
