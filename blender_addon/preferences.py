"""Add-on preferences: the worker's Python interpreter (with Detect/Check), device, cache folder."""
from __future__ import annotations

import os
import sys

import bpy
from bpy.props import EnumProperty, StringProperty

from . import worker

ADDON_DIR = os.path.dirname(os.path.realpath(__file__))


class Settings:
    """Effective settings (preferences, overridden by environment variables for headless runs)."""

    def __init__(self, python="", metaphys_folder="", device="", cache_root="//metaphys_cache"):
        self.python = python
        self.metaphys_folder = metaphys_folder
        self.device = device
        self.cache_root = cache_root


def addon_prefs():
    """This add-on's AddonPreferences, or None (e.g. registered by calling register() directly)."""
    addons = bpy.context.preferences.addons
    pkg = __package__
    if pkg in addons:
        return addons[pkg].preferences
    return None


def blender_python() -> str:
    """Blender's own interpreter (sys.executable is Blender's bundled Python, or the venv for bpy-as-module)."""
    return sys.executable or ""


def settings() -> Settings:
    p = addon_prefs()
    s = Settings()
    if p is not None:
        s.python = bpy.path.abspath(p.python_path) if p.python_path else ""
        s.metaphys_folder = bpy.path.abspath(p.metaphys_folder) if p.metaphys_folder else ""
        s.device = "" if p.device == "AUTO" else p.device.lower()
        s.cache_root = p.cache_root or "//metaphys_cache"
    s.python = os.environ.get("METAPHYS_PYTHON", s.python)
    s.metaphys_folder = os.environ.get("METAPHYS_FOLDER", s.metaphys_folder)
    return s


_detected: dict = {}


def resolve_interpreter(report=None) -> tuple[str, str]:
    """(python, pythonpath) for the worker: the preference if set, else auto-detection (remembered).

    Raises RuntimeError with a message for the user when none works.
    """
    s = settings()
    if s.python:
        ok, msg, _ = worker.probe_interpreter(s.python, s.metaphys_folder)
        if not ok and not s.metaphys_folder:
            root = worker.find_repo_root(ADDON_DIR)
            if root:
                ok2, _msg2, _ = worker.probe_interpreter(s.python, root)
                if ok2:
                    return s.python, root
        if not ok:
            raise RuntimeError(msg)
        return s.python, s.metaphys_folder
    if _detected.get("python"):
        return _detected["python"], _detected["pythonpath"]
    py, pp, msg, notes = worker.detect_interpreter(ADDON_DIR, s.metaphys_folder, blender_python())
    if not py:
        raise RuntimeError("no Python interpreter with metaphys found. Set one in Preferences > Add-ons > "
                           "metaphys (Python Interpreter), or press Detect. Tried: " + "; ".join(notes[:4]))
    _detected.update(python=py, pythonpath=pp)
    p = addon_prefs()
    if p is not None and not p.python_path:
        try:
            p.python_path = py
            if pp and not p.metaphys_folder:
                p.metaphys_folder = pp
        except (AttributeError, RuntimeError):
            pass
    if report is not None:
        report({"INFO"}, f"metaphys worker: {msg}")
    return py, pp


class METAPHYS_OT_detect_python(bpy.types.Operator):
    """Find a Python interpreter that can run metaphys (repo .venv, `metaphys` on PATH, python3, Blender's own)"""
    bl_idname = "metaphys.detect_python"
    bl_label = "Detect"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        p = addon_prefs()
        folder = bpy.path.abspath(p.metaphys_folder) if p is not None and p.metaphys_folder else ""
        py, pp, msg, notes = worker.detect_interpreter(ADDON_DIR, folder, blender_python())
        if not py:
            self.report({"ERROR"}, "No Python interpreter that can import metaphys was found. "
                        + (" | ".join(notes[:3]) if notes else "") +
                        " Install metaphys (pip install -e <checkout>) and set the interpreter by hand.")
            return {"CANCELLED"}
        _detected.update(python=py, pythonpath=pp)
        if p is not None:
            p.python_path = py
            if pp:
                p.metaphys_folder = pp
            p.status = msg
        self.report({"INFO"}, f"metaphys: {msg}")
        return {"FINISHED"}


class METAPHYS_OT_check_python(bpy.types.Operator):
    """Check that the configured interpreter can import metaphys"""
    bl_idname = "metaphys.check_python"
    bl_label = "Check"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        s = settings()
        ok, msg, _ = worker.probe_interpreter(s.python, s.metaphys_folder)
        p = addon_prefs()
        if p is not None:
            p.status = msg if ok else "Error: " + msg
        self.report({"INFO"} if ok else {"ERROR"}, msg)
        return {"FINISHED"} if ok else {"CANCELLED"}


class MetaphysPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Python Interpreter", subtype="FILE_PATH",
        description="Python that runs the bake worker ('python -m metaphys bake'); it needs metaphys and torch. "
                    "Empty: detected on the first bake")
    metaphys_folder: StringProperty(
        name="metaphys Folder", subtype="DIR_PATH",
        description="Optional: a metaphys checkout put on the worker's PYTHONPATH (when metaphys is not "
                    "pip-installed in that interpreter)")
    device: EnumProperty(name="Device", default="AUTO", items=[
        ("AUTO", "Auto", "The engine's default"),
        ("CPU", "CPU", "Bake on the CPU"),
        ("CUDA", "CUDA", "Bake on an NVIDIA GPU"),
    ])
    cache_root: StringProperty(
        name="Cache Folder", default="//metaphys_cache", subtype="DIR_PATH",
        description="Bakes go to <this>/<object name>/; '//' is the folder of the .blend (a temporary folder "
                    "while the file is unsaved)")
    status: StringProperty(name="Status", default="")

    def draw(self, context):
        col = self.layout.column()
        row = col.row(align=True)
        row.prop(self, "python_path")
        row.operator(METAPHYS_OT_detect_python.bl_idname, icon="VIEWZOOM")
        row.operator(METAPHYS_OT_check_python.bl_idname, icon="CHECKMARK")
        col.prop(self, "metaphys_folder")
        col.prop(self, "device")
        col.prop(self, "cache_root")
        if self.status:
            box = col.box()
            for i, line in enumerate(_wrap(self.status, 110)):
                box.label(text=line, icon=("ERROR" if self.status.startswith("Error") else "INFO") if i == 0
                          else "BLANK1")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width) or [""]


classes = (METAPHYS_OT_detect_python, METAPHYS_OT_check_python, MetaphysPreferences)


def register():
    for c in classes:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(classes):
        bpy.utils.unregister_class(c)
    _detected.clear()
