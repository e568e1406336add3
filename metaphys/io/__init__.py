"""metaphys.io: export formats for bakes, free of Blender (never imports bpy) and of the physics.

Format code only sees numpy arrays. Every file is written atomically (``metaphys.io.atomic``):
a reader never sees a torn file and a failed write keeps the previous one.

Modules (importing this package loads only numpy; trimesh, Pillow, matplotlib and openvdb are
imported on first use):

* ``atomic``   atomic_path, atomic_open, atomic_write_bytes/text, atomic_directory, remove_stale_temps
* ``pc2``      PC2 point caches for Blender's Mesh Cache modifier (write/read/append, PC2Writer)
* ``mdd``      MDD vertex caches
* ``meshseq``  H x W grid meshes: faces, UVs, OBJ (quads + UVs) / PLY / GLB frames and sequences
* ``images``   16-bit density PNGs, flipbook sprite sheets + JSON layout, per-frame .npz
* ``flipbook``  game flipbooks: alpha/emissive/motion-vector/normal sheets, loops, sidecar, blended preview
* ``vdb``      OpenVDB density grids for bakes (through ``vdbfile``)
* ``vdbfile``  the OpenVDB file format (version 224), written and read with numpy and zlib
* ``usd``      USD: the cloth mesh with per-frame points, a Volume over the VDB sequence (needs usd-core)
* ``manifest`` strict JSON manifests and the resumable BakeManifest
* ``preview``  GIF previews of density and cloth
"""
from .atomic import atomic_directory, atomic_open, atomic_path, atomic_write_bytes, atomic_write_text
from .images import (read_density_png, read_frame_npz, write_density_png, write_density_sequence, write_flipbook,
                     write_frame_npz)
from .manifest import BakeManifest, read_manifest, sha256_file, write_manifest
from .mdd import read_mdd, write_mdd
from .meshseq import grid_faces, grid_uvs, write_mesh, write_rest_obj, write_sequence
from .pc2 import PC2Writer, append_pc2, read_pc2, truncate_pc2, write_pc2
from .preview import cloth_gif, density_gif
from .vdb import read_vdb_grid, vdb_available, write_density_vdb

__all__ = [
    "atomic_path", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_directory",
    "write_pc2", "read_pc2", "append_pc2", "truncate_pc2", "PC2Writer",
    "write_mdd", "read_mdd",
    "grid_faces", "grid_uvs", "write_mesh", "write_rest_obj", "write_sequence",
    "write_density_png", "read_density_png", "write_density_sequence", "write_flipbook", "write_frame_npz",
    "read_frame_npz",
    "vdb_available", "write_density_vdb", "read_vdb_grid",
    "write_manifest", "read_manifest", "sha256_file", "BakeManifest",
    "density_gif", "cloth_gif",
]
