"""The files each bake kind writes in its folder, in one table the driver reads to clear a reused
folder (without importing the kinds, which import the driver's error type)."""
import re

# kind -> (files, {folder: file-name pattern}) a bake of that kind writes in its folder; cleared when
# the folder is reused without --resume.
OWNED = {
    "cloth": (("cloth.pc2", "rest.obj", "preview.gif", "cloth.usdc"), {"frames": r"frame_\d+\.(obj|ply|glb)"}),
    # flipbook.png: the density-only sheet of earlier bakes, still cleared from a reused folder
    "smoke": (("flipbook.png", "flipbook.json", "flipbook_color.png", "flipbook_emissive.png", "flipbook_motion.png",
               "flipbook_normal.png", "flipbook_preview.gif", "preview.gif", "smoke.usda"),
              {"density": r"density_\d+\.(png|npz|vdb)"}),
}

# Keys of a writer's per-frame ``files`` that name a sample of a cache file every frame appends to
# (not a file of its own): the manifest's checksum for such a key covers that sample's bytes.
SAMPLED = {"pc2_sample": "cloth.pc2"}

_NUMBER = re.compile(r"_(\d+)\.[^.]+$")


def frame_sort_key(name: str):
    """Sort key that orders frame files by number, not as text (density_9998 before density_10000,
    which the zero padding of 4 digits no longer orders); names without a number go last."""
    m = _NUMBER.search(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)
