"""metaphys for Blender: bake cloth and 2D smoke with the metaphys engine (a learned neural optimizer).

A thin client of the bake contract (docs/bake-spec.md in the metaphys repository): the add-on
turns the scene into a spec, runs ``python -m metaphys bake`` in a worker process (torch never
loads into Blender), streams its progress, and loads the results (Mesh Cache modifier, Volume
object). See docs/blender.md.
"""
from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import operators, preferences, properties, ui

_modules = (properties, preferences, operators, ui)


@persistent
def _cancel_on_load(_dummy=None):
    operators.cancel_all()


def register():
    for m in _modules:
        m.register()
    if _cancel_on_load not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_cancel_on_load)


def unregister():
    if _cancel_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_load)
    for m in reversed(_modules):
        m.unregister()
