"""The OpenVDB file format (``.vdb``, format version 224), written and read with numpy and zlib.

PyPI has no OpenVDB binding for CPython 3.11 on Linux, so metaphys writes the format itself. It
writes what OpenVDB 10-12 itself writes for a ``FloatGrid`` / ``Vec3SGrid`` with the standard
5-4-3 tree (root -> 4096^3 internal -> 128^3 internal -> 8^3 leaves): zip + active-mask
compression, inactive voxels at the background 0, no tiles, a ``ScaleTranslateMap`` (or an
``AffineMap`` for a rotated/sheared transform). Files are checked against OpenVDB 12 (the
``openvdb`` module in Blender's bpy wheel) and Blender's Volume objects by tests/blender.

The reader covers files written this way (float and vec3s grids, no or zip compression, with or
without active-mask compression, the linear transform maps). What it does not read is refused
with a message naming the file and the feature: Blosc compression (Houdini's and OpenVDB's
default where Blosc is built in), half-float grids, tiles and the other value-compression modes.

Layout notes (all little-endian):

* header: int64 magic ``0x56444220``, uint32 file version, uint32 library major and minor,
  uint8 "has grid offsets", 36-character UUID; then the file metadata and an int32 grid count;
* per grid: name, type and instance-parent strings, three int64 offsets (grid, blocks, end), the
  uint32 compression flags, the grid metadata, the transform (map type name + its doubles), the
  topology (root background, tile and child counts, then each node's child and value masks
  followed by its values, depth first) and the leaf buffers (value mask + values, depth first);
* node tables and leaf values are z-fastest (``n = (x << 2*log2dim) + (y << log2dim) + z``);
  masks are uint64 words, least significant bit first;
* a value array is one "what was omitted" byte (0: only the active values follow, the inactive
  ones are the background) and the values, zlib-compressed behind an int64 byte count when the
  zip flag is set (a count <= 0 means -count raw bytes follow).
"""
from __future__ import annotations

import hashlib
import io
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["VdbFormatError", "GridToWrite", "GridInfo", "GridData", "write_vdb", "read_grid_infos",
           "read_grid", "FLOAT_TREE", "VEC3S_TREE"]

MAGIC = 0x56444220
FILE_VERSION = 224                  # OpenVDB 6.1+ (MULTIPASS_IO); 222 added active-mask compression
LIBRARY_VERSION = (10, 0)
COMPRESS_ZIP, COMPRESS_ACTIVE_MASK, COMPRESS_BLOSC = 0x1, 0x2, 0x4
FLOAT_TREE, VEC3S_TREE = "Tree_float_5_4_3", "Tree_vec3s_5_4_3"
_LOG2 = (5, 4, 3)                   # log2 of the child count per axis: level 2, level 1, leaf
_LEAF_DIM = 8
ZIP_LEVEL = 1                       # measured: level 6 saves < 3 % on smoke frames and is 2x slower

# what a value array leaves out (OpenVDB io/Compression.h; modes 1-5 store other inactive values)
_NO_MASK_OR_INACTIVE_VALS = 0       # every inactive value is the background: only active ones stored
_NO_MASK_AND_ALL_VALS = 6           # every value stored


class VdbFormatError(ValueError):
    """A file that is not a .vdb file this module can read; the message names the file."""


# ---- metadata values --------------------------------------------------------------------------------
def _meta_entry(value) -> Tuple[str, bytes]:
    """OpenVDB metadata type name and payload of a Python value (as pyopenvdb maps them)."""
    if isinstance(value, (bool, np.bool_)):
        return "bool", struct.pack("<B", bool(value))
    if isinstance(value, (int, np.integer)):
        return "int64", struct.pack("<q", int(value))
    if isinstance(value, (float, np.floating)):
        return "double", struct.pack("<d", float(value))
    if isinstance(value, str):
        return "string", value.encode("utf-8")
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, (int, np.integer)) for v in value):
        return "vec3i", struct.pack("<3i", *(int(v) for v in value))
    raise TypeError(f"metadata values must be str, int, float, bool or a 3-tuple of ints, "
                    f"got {type(value).__name__}")


_META_READERS = {
    "bool": lambda b: bool(b[0]), "int32": lambda b: struct.unpack("<i", b)[0],
    "int64": lambda b: struct.unpack("<q", b)[0], "float": lambda b: struct.unpack("<f", b)[0],
    "double": lambda b: struct.unpack("<d", b)[0], "string": lambda b: b.decode("utf-8", "replace"),
    "vec3i": lambda b: struct.unpack("<3i", b), "vec3s": lambda b: struct.unpack("<3f", b),
    "vec3d": lambda b: struct.unpack("<3d", b),
}


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def _metadata_block(meta: Mapping) -> bytes:
    parts = [struct.pack("<I", len(meta))]
    for name in sorted(meta):
        type_name, payload = _meta_entry(meta[name])
        parts += [_string(str(name)), _string(type_name), struct.pack("<I", len(payload)), payload]
    return b"".join(parts)


# ---- transform ------------------------------------------------------------------------------------
def _transform_block(m: np.ndarray) -> bytes:
    """A 4x4 row-vector index-to-world matrix as the simplest map OpenVDB itself would store."""
    linear = m[:3, :3]
    if np.count_nonzero(linear - np.diag(np.diag(linear))) == 0 and np.all(m[:3, 3] == 0) and m[3, 3] == 1:
        scale, translation = np.diag(linear), m[3, :3]
        vecs = (translation, scale, scale, 1.0 / scale, 1.0 / scale ** 2, 0.5 / scale)
        return _string("ScaleTranslateMap") + np.asarray(vecs, "<f8").tobytes()
    return _string("AffineMap") + np.asarray(m, "<f8").tobytes()


def _read_transform(r: "_Reader") -> np.ndarray:
    kind = r.string()
    if kind in ("ScaleTranslateMap", "UniformScaleTranslateMap"):
        v = r.array("<f8", 18).reshape(6, 3)  # translation, scale, voxel size, 1/scale, 1/scale^2, 1/(2 scale)
        return _matrix(v[1], v[0])
    if kind in ("ScaleMap", "UniformScaleMap"):
        v = r.array("<f8", 15).reshape(5, 3)
        return _matrix(v[0], np.zeros(3))
    if kind == "TranslationMap":
        return _matrix(np.ones(3), r.array("<f8", 3))
    if kind == "AffineMap":
        return r.array("<f8", 16).reshape(4, 4).copy()
    raise VdbFormatError(f"{r.name}: transform map {kind!r} is not supported (linear maps only: "
                         "ScaleTranslateMap, ScaleMap, TranslationMap, AffineMap and their uniform forms)")


def _matrix(scale, translation) -> np.ndarray:
    m = np.diag([*np.asarray(scale, float), 1.0])
    m[3, :3] = translation
    return m


# ---- writing ----------------------------------------------------------------------------------------
@dataclass
class GridToWrite:
    """One grid: ``values`` [X, Y, Z] float32 (or [X, Y, Z, 3] vec3) at index (0, 0, 0) onwards;
    voxels equal to the background 0 are inactive (not stored). ``index_to_world``: 4x4 row-vector
    matrix (translation in the last row). ``metadata``: str/int/float/bool values."""
    name: str
    values: np.ndarray
    index_to_world: np.ndarray
    grid_class: str = "unknown"              # "fog volume", "level set", "staggered", "unknown"
    vector_type: Optional[str] = None        # vec3 grids: e.g. "contravariant relative"
    metadata: Dict[str, object] = field(default_factory=dict)


def _zipped(raw: bytes) -> bytes:
    packed = zlib.compress(raw, ZIP_LEVEL)
    if len(packed) < len(raw):
        return struct.pack("<q", len(packed)) + packed
    return struct.pack("<q", -len(raw)) + raw


def _values_block(active_values: bytes) -> bytes:
    """A value array whose inactive entries are the background: only the active values are stored."""
    return struct.pack("<b", _NO_MASK_OR_INACTIVE_VALS) + _zipped(active_values)


def _mask_bytes(bits: np.ndarray) -> bytes:
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _leaf_blocks(values: np.ndarray, active: np.ndarray):
    """Per stored leaf, in OpenVDB's traversal order: leaf coordinates (origin / 8), value mask
    [512] and values [512(, 3)], each leaf's entries z-fastest as OpenVDB stores them."""
    comps = values.shape[3:]
    pad = -np.array(active.shape) % _LEAF_DIM
    if pad.any():
        values = np.pad(values, [(0, p) for p in pad] + [(0, 0)] * len(comps))
        active = np.pad(active, [(0, p) for p in pad])
    nx, ny, nz = (d // _LEAF_DIM for d in active.shape)
    # [X, Y, Z] -> [leaf x, leaf y, leaf z, 8, 8, 8] -> [leaf x, leaf y, leaf z, 512]
    masks = active.reshape(nx, 8, ny, 8, nz, 8).transpose(0, 2, 4, 1, 3, 5).reshape(nx, ny, nz, 512)
    vals = values.reshape(nx, 8, ny, 8, nz, 8, *comps).transpose(0, 2, 4, 1, 3, 5, *range(6, 6 + len(comps)))
    vals = vals.reshape(nx, ny, nz, 512, *comps)
    keep = np.argwhere(masks.any(axis=-1))
    # by level-2 node (4096^3), then level-1 node (128^3), then leaf, each x-major as OpenVDB walks them
    keep = keep[np.lexsort(tuple(np.concatenate([keep >> 9, keep >> 4, keep], axis=1).T[::-1]))]
    return keep, masks[tuple(keep.T)], vals[tuple(keep.T)]


def _tree_blocks(values: np.ndarray, active: np.ndarray, value_size: int) -> Tuple[bytes, bytes]:
    """Topology and leaf-buffer bytes of a grid (inactive voxels must hold the background 0)."""
    leaves, masks, vals = _leaf_blocks(values, active)
    mask_bytes = np.packbits(masks, axis=1, bitorder="little")
    level2, level1 = leaves >> 9, leaves >> 4
    topo = [b"\0" * value_size, struct.pack("<II", 0, len(np.unique(level2, axis=0)))]  # background 0, no tiles
    bufs = []
    for i in range(len(leaves)):
        new2 = i == 0 or (level2[i] != level2[i - 1]).any()
        if new2:
            topo.append(struct.pack("<3i", *(level2[i] * 4096).tolist()))
            topo.append(_internal_node(level1[(level2 == level2[i]).all(axis=1)] & 31, 5))
        if new2 or (level1[i] != level1[i - 1]).any():
            topo.append(_internal_node(leaves[(level1 == level1[i]).all(axis=1)] & 15, 4))
        mb = mask_bytes[i].tobytes()
        topo.append(mb)
        bufs += [mb, _values_block(np.ascontiguousarray(vals[i][masks[i]], "<f4").tobytes())]
    return b"".join(topo), b"".join(bufs)


def _internal_node(children: np.ndarray, log2dim: int) -> bytes:
    """An internal node: child mask (``children``: local child coordinates), an empty value mask and
    its (all background) values."""
    dim = 1 << log2dim
    child = np.zeros(dim ** 3, bool)
    child[(children[:, 0] << 2 * log2dim) + (children[:, 1] << log2dim) + children[:, 2]] = True
    return _mask_bytes(child) + _mask_bytes(np.zeros(dim ** 3, bool)) + _values_block(b"")


def _bbox(active: np.ndarray) -> List[int]:
    """Active index bbox: min xyz + max xyz ([] when nothing is active)."""
    if not active.any():
        return []
    spans = [np.flatnonzero(active.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    return [int(s[0]) for s in spans] + [int(s[-1]) for s in spans]


def _grid_bytes(g: GridToWrite) -> Tuple[bytes, bytes, bytes]:
    """The grid's descriptor strings, its header (compression, metadata, transform, topology) and buffers."""
    values = np.asarray(g.values)
    vec = values.ndim == 4
    if values.ndim not in (3, 4) or (vec and values.shape[3] != 3) or 0 in values.shape:
        raise ValueError(f"grid {g.name!r}: values must be a non-empty [X, Y, Z] or [X, Y, Z, 3] array, "
                         f"got shape {values.shape}")
    values = np.ascontiguousarray(values, np.float32)
    active = np.any(values != 0, axis=-1) if vec else values != 0
    topo, bufs = _tree_blocks(values, active, 12 if vec else 4)
    bbox = _bbox(active)
    meta = {"name": g.name, "class": g.grid_class, "is_local_space": False,
            "file_compression": "zip + active values", **g.metadata}
    if bbox:
        meta.update(file_bbox_min=tuple(bbox[:3]), file_bbox_max=tuple(bbox[3:]))
    meta["file_voxel_count"] = int(np.count_nonzero(active))
    if vec and g.vector_type:
        meta["vector_type"] = g.vector_type
    desc = _string(g.name) + _string(VEC3S_TREE if vec else FLOAT_TREE) + _string("")
    head = (struct.pack("<I", COMPRESS_ZIP | COMPRESS_ACTIVE_MASK) + _metadata_block(meta)
            + _transform_block(np.asarray(g.index_to_world, np.float64)) + struct.pack("<i", 1) + topo)
    return desc, head, bufs


def write_vdb(fh: BinaryIO, grids: Sequence[GridToWrite], metadata: Optional[Mapping] = None) -> None:
    """Write ``grids`` (distinct names) and file ``metadata`` to the binary file ``fh``."""
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise ValueError(f"grid names must be distinct, got {names}")
    header = struct.pack("<qIIIB", MAGIC, FILE_VERSION, *LIBRARY_VERSION, 1)
    uuid_len = 36
    out = io.BytesIO()
    out.write(_metadata_block(dict(metadata or {})))
    out.write(struct.pack("<i", len(grids)))
    for g in grids:
        desc, head, bufs = _grid_bytes(g)
        grid_pos = len(header) + uuid_len + out.tell() + len(desc) + 24   # absolute file offsets
        out.write(desc + struct.pack("<3q", grid_pos, grid_pos + len(head), grid_pos + len(head) + len(bufs)))
        out.write(head)
        out.write(bufs)
    # the file's UUID from its content (name-based, SHA-1): the same grids give the same bytes, so two
    # identical bakes write identical files (a random UUID made every .vdb differ)
    file_id = str(uuid.uuid5(uuid.NAMESPACE_OID, hashlib.sha1(out.getbuffer()).hexdigest())).upper().encode("ascii")
    assert len(file_id) == uuid_len
    fh.write(header + file_id)
    fh.write(out.getbuffer())


# ---- reading ----------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = memoryview(data), 0, name

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise VdbFormatError(f"{self.name}: truncated .vdb file (wanted {n} bytes at offset {self.pos}, "
                                 f"the file has {len(self.data)})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<I")
        return bytes(self.take(n)).decode("utf-8", "replace")

    def array(self, dtype: str, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count), dt)

    def mask(self, log2dim: int) -> np.ndarray:
        n = 1 << 3 * log2dim
        return np.unpackbits(np.frombuffer(self.take(n // 8), np.uint8), bitorder="little").astype(bool)

    def metadata(self) -> dict:
        (count,) = self.unpack("<I")
        out = {}
        for _ in range(count):
            name, type_name = self.string(), self.string()
            (size,) = self.unpack("<I")
            payload = bytes(self.take(size))
            reader = _META_READERS.get(type_name)
            out[name] = reader(payload) if reader else payload  # unknown types stay raw bytes
        return out


@dataclass
class GridInfo:
    name: str
    tree_type: str                  # e.g. "Tree_float_5_4_3" (a "_HalfFloat" suffix kept)
    metadata: dict
    grid_pos: int


@dataclass
class GridData:
    """A grid read back: its leaves in index space, transform and metadata."""
    info: GridInfo
    index_to_world: np.ndarray
    background: np.ndarray
    leaves: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]   # (origin xyz, mask [512], values [512(, 3)])

    def active_bbox(self) -> Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]]:
        """Min and max index of the active voxels, or None for an empty grid."""
        local = np.stack(np.unravel_index(np.arange(512), (8, 8, 8)), axis=1)
        pts = [origin + local[mask] for origin, mask, _ in self.leaves if mask.any()]
        if not pts:
            return None
        pts = np.concatenate(pts)
        return tuple(pts.min(axis=0).tolist()), tuple(pts.max(axis=0).tolist())

    def dense(self, lo, hi) -> np.ndarray:
        """Values of index box [lo, hi] (inclusive) as [X, Y, Z] (or [X, Y, Z, 3]) float32."""
        lo, hi = np.asarray(lo, int), np.asarray(hi, int)
        comps = self.background.shape
        out = np.empty((*(hi - lo + 1), *comps), np.float32)
        out[...] = self.background
        for origin, _, values in self.leaves:
            _paste(out, lo, hi, origin, values.reshape(8, 8, 8, *comps))
        return out


def _paste(out: np.ndarray, lo, hi, origin, block: np.ndarray) -> None:
    a = np.maximum(origin, lo)
    b = np.minimum(origin + block.shape[0] - 1, hi)
    if (a > b).any():
        return
    out[tuple(slice(s, e + 1) for s, e in zip(a - lo, b - lo))] = block[
        tuple(slice(s, e + 1) for s, e in zip(a - origin, b - origin))]


def _read_header(data: bytes, name: str) -> Tuple[_Reader, List[GridInfo]]:
    r = _Reader(data, name)
    if len(data) < 8 or r.unpack("<q")[0] != MAGIC:
        raise VdbFormatError(f"{name}: not an OpenVDB file (no VDB magic number at the start)")
    version, _, _ = r.unpack("<III")
    if version < 222:
        raise VdbFormatError(f"{name}: OpenVDB file format version {version} is too old "
                             "(this reader supports 222 and later: OpenVDB 3 onwards)")
    (has_offsets,) = r.unpack("<B")
    if not has_offsets:
        raise VdbFormatError(f"{name}: a streamed .vdb file without grid offsets is not supported")
    r.take(36)  # UUID
    r.metadata()
    (count,) = r.unpack("<i")
    infos = []
    for _ in range(count):
        unique, tree_type = r.string(), r.string()
        r.string()  # instance parent
        grid_pos, _, end_pos = r.unpack("<3q")
        here = r.pos
        r.pos = grid_pos
        r.unpack("<I")  # compression
        meta = r.metadata()
        infos.append(GridInfo(unique.split("\x1e")[0], tree_type, meta, grid_pos))
        r.pos = end_pos if end_pos > here else here
    return r, infos


def _load(path) -> Tuple[bytes, str]:
    name = str(path)
    try:
        with open(path, "rb") as fh:
            return fh.read(), name
    except OSError as exc:
        raise VdbFormatError(f"cannot read {name}: {exc.strerror or exc}") from None


def read_grid_infos(path) -> List[GridInfo]:
    """The grids of a .vdb file: names, tree types and metadata (no voxel data)."""
    data, name = _load(path)
    return _read_header(data, name)[1]


def read_grid(path, grid_name: str) -> GridData:
    """Read grid ``grid_name`` of a .vdb file (VdbFormatError naming the file and grid if impossible)."""
    data, name = _load(path)
    r, infos = _read_header(data, name)
    info = next((i for i in infos if i.name == grid_name), None)
    if info is None:
        raise VdbFormatError(f"{name}: no grid named {grid_name!r} (grids: {[i.name for i in infos]})")
    comps = {FLOAT_TREE: (), VEC3S_TREE: (3,)}.get(info.tree_type)
    if comps is None:
        raise VdbFormatError(f"{name}: grid {grid_name!r} is a {info.tree_type}; this reader supports "
                             f"{FLOAT_TREE} and {VEC3S_TREE} (full precision, as metaphys writes them)")
    r.pos = info.grid_pos
    (compression,) = r.unpack("<I")
    if compression & COMPRESS_BLOSC:
        raise VdbFormatError(f"{name}: grid {grid_name!r} is Blosc-compressed, which this reader does not "
                             "support (it reads uncompressed and zip-compressed files, as metaphys writes them)")
    r.metadata()
    m = _read_transform(r)
    return _TreeReader(r, compression, comps, grid_name).read(info, m)


class _TreeReader:
    def __init__(self, r: _Reader, compression: int, comps: tuple, grid_name: str):
        self.r, self.compression, self.comps = r, compression, comps
        self.where = f"{r.name}: grid {grid_name!r}"
        self.ncomp = int(np.prod(comps, dtype=int))
        self.leaves, self.pending = [], []

    def refuse(self, what: str):
        raise VdbFormatError(f"{self.where} {what}, which this reader does not support (it reads the "
                             "layout metaphys writes: no tiles, inactive voxels at the background)")

    def read(self, info: GridInfo, m: np.ndarray) -> GridData:
        r = self.r
        (buffer_count,) = r.unpack("<i")
        if buffer_count != 1:
            raise VdbFormatError(f"{r.name}: grid {info.name!r} has {buffer_count} buffers per leaf (expected 1)")
        self.background = r.array("<f4", self.ncomp).reshape(self.comps).copy()
        tiles, children = r.unpack("<II")
        if tiles:
            self.refuse(f"has {tiles} root tiles (constant regions)")
        for _ in range(children):
            self._internal(np.array(r.unpack("<3i")), 0)
        for origin in self.pending:  # leaf buffers, in topology order
            mask = r.mask(3)
            self.leaves.append((origin, mask, self._values(mask, 512)))
        return GridData(info, m, self.background, self.leaves)

    def _internal(self, origin: np.ndarray, level: int) -> None:
        log2dim = _LOG2[level]
        child_size = 1 << sum(_LOG2[level + 1:])
        child, value = self.r.mask(log2dim), self.r.mask(log2dim)
        values = self._values(value, 1 << 3 * log2dim)
        differs = np.any((values != self.background).reshape(len(child), -1), axis=1)
        if (~child & (value | differs)).any():
            self.refuse(f"has tiles (constant regions) in a node at {origin.tolist()}")
        dim = 1 << log2dim
        for n in np.flatnonzero(child):
            xyz = origin + child_size * np.array(np.unravel_index(n, (dim, dim, dim)))
            if level + 1 < len(_LOG2) - 1:
                self._internal(xyz, level + 1)
            else:
                self.r.mask(3)  # the leaf's topology is its value mask, read again with its buffer
                self.pending.append(xyz)

    def _values(self, value_mask: np.ndarray, count: int) -> np.ndarray:
        """One value array (OpenVDB readCompressedValues): [count(, 3)] float32."""
        r = self.r
        (kind,) = r.unpack("<b")
        if kind not in (_NO_MASK_OR_INACTIVE_VALS, _NO_MASK_AND_ALL_VALS):
            self.refuse(f"stores inactive values other than the background (value compression mode {kind})")
        only_active = bool(self.compression & COMPRESS_ACTIVE_MASK) and kind == _NO_MASK_OR_INACTIVE_VALS
        stored = int(value_mask.sum()) if only_active else count
        got = np.frombuffer(self._data(stored * self.ncomp * 4), "<f4").reshape(stored, *self.comps)
        if stored == count:
            return got.copy()
        out = np.empty((count, *self.comps), np.float32)
        out[...] = self.background
        out[value_mask] = got
        return out

    def _data(self, nbytes: int) -> bytes:
        r = self.r
        if not self.compression & COMPRESS_ZIP:
            return bytes(r.take(nbytes))
        (stored,) = r.unpack("<q")
        if stored <= 0:
            return bytes(r.take(-stored))
        try:
            raw = zlib.decompress(r.take(stored))
        except zlib.error as exc:
            raise VdbFormatError(f"{r.name}: corrupt zip-compressed values at offset {r.pos}: {exc}") from None
        if len(raw) != nbytes:
            raise VdbFormatError(f"{r.name}: zip block at offset {r.pos} holds {len(raw)} bytes, expected {nbytes}")
        return raw
