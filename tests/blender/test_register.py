"""The add-on registers and unregisters cleanly, twice in a row; the extension zip installs."""
import os
import subprocess
import sys

import bpy

from conftest import ADDON_MODULE, REPO, disable_addon, enable_addon

OPS = ("bake_cloth", "free_cloth", "bake_smoke", "free_smoke", "detect_python", "check_python")


def _registered() -> bool:
    return hasattr(bpy.types.Object, "metaphys_cloth") and hasattr(bpy.types, "METAPHYS_OT_bake_cloth")


def test_register_unregister_twice():
    assert _registered()
    for _ in range(2):
        disable_addon()
        assert not _registered()
        assert not hasattr(bpy.types.Object, "metaphys_smoke")
        assert ADDON_MODULE not in bpy.context.preferences.addons
        enable_addon()
        assert _registered()
        for op in OPS:
            assert hasattr(bpy.ops.metaphys, op)
            assert bpy.ops.metaphys.__getattr__(op).get_rna_type() is not None
        for panel in ("METAPHYS_PT_cloth", "METAPHYS_PT_collider", "METAPHYS_PT_smoke"):
            assert hasattr(bpy.types, panel)
    # preferences survive re-enabling in this session's userprefs only when set again
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.python_path = sys.executable
    prefs.metaphys_folder = REPO


_INSTALL = r"""
import os, sys, bpy
zp = sys.argv[-1]
bpy.ops.extensions.package_install_files(filepath=zp, repo="user_default", enable_on_install=True)
mod = "bl_ext.user_default.metaphys"
assert mod in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
assert hasattr(bpy.ops.metaphys, "bake_cloth") and hasattr(bpy.types.Object, "metaphys_cloth")
p = bpy.context.preferences.addons[mod].preferences
assert p.cache_root == "//metaphys_cache"
print("INSTALLED", os.listdir(os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "metaphys")))
"""


def test_extension_zip_installs(tmp_path):
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, os.path.join(REPO, "blender_addon", "tools", "build_zip.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    zp = next(out.glob("metaphys-*.zip"))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    r = subprocess.run([sys.executable, "-c", _INSTALL, str(zp)], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "INSTALLED" in r.stdout
    assert "worker.py" in r.stdout and "Makefile.inc" not in r.stdout and "tools" not in r.stdout
