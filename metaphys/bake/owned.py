"""The files each bake kind writes in its folder, in one table the driver reads to clear a reused
folder (without importing the kinds, which import the driver's error type)."""

# kind -> (files, {folder: file-name pattern}) a bake of that kind writes in its folder; cleared when
# the folder is reused without --resume.
OWNED = {
    "cloth": (("cloth.pc2", "rest.obj", "preview.gif", "cloth.usdc"), {"frames": r"frame_\d+\.(obj|ply|glb)"}),
    "smoke": (("flipbook.png", "flipbook.json", "preview.gif", "smoke.usda"), {"density": r"density_\d+\.(png|npz|vdb)"}),
}
