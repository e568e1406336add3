"""A protocol stub of the metaphys engine for the add-on's tests (docs/bake-spec.md).

Put ``tests/blender/stub_engine`` first on PYTHONPATH and ``python -m metaphys bake ...`` speaks
the bake contract (events, exit codes, SIGTERM -> 130, outputs) with trivial "physics": cloth
vertices fall under gravity unless pinned; smoke density is the emitter mask times the frame
number. Knobs (environment): METAPHYS_STUB_DELAY (seconds per frame), METAPHYS_STUB_FAIL_AT
(frame index that fails with an error event).
"""
__version__ = "0.0-stub"
