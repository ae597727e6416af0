"""Damage campaign: seeded random corruptions of a real archive, each on its own copy.

Kinds, taken in turn: a flipped byte in a shard, a truncated shard, a deleted shard, an
edited ``manifest.json``, a swapped chunk (two index entries of one shard exchanged, a
chunk transplanted from another shard, or two shard files of equal size exchanged: every
chunk still matches its own crc32c, only the manifest knows it is in the wrong place) and
an edited ``zarr.json`` (the group's or an array's: a changed value, torn JSON, or gone).

For every damaged copy:

* ``verify`` must report a problem (or refuse to open the archive with ``ArchiveError``),
  naming the chunk where the damage hits one;
* ``restore`` of a small region over the damaged chunk (the whole slide when the chunk is
  in an LR level restore copies) and ``wsistore.open(...).read_region`` over it must raise
  a :class:`~wsistore.errors.WsistoreError` instead of returning pixels, and leave no
  finished output; pixels returned anyway are a miss, and the miss says whether they were
  painted as the glass colour. Damage to an array restore never reads (level 1 of a TIFF
  output, associated images, the tissue mask) is checked through the API that reads it.

    python -m benchmarks.reliability.damage [--count 120] [--seed 0] [--slide SVS] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import tifffile

import wsistore
from tests.data import SLIDE
from wsistore.archive.format import ASSOCIATED_GROUP, MANIFEST_KEY
from wsistore.archive.manifest import chunk_id, read_shard_index, shard_chunks
from wsistore.archive.reader import Archive
from wsistore.archive.verify import verify
from wsistore.errors import ArchiveError, WsistoreError
from wsistore.restoration.pipeline import RestoreOptions

KINDS = ("byte_flip", "truncate", "delete_shard", "edit_manifest", "swap_chunk", "edit_zarr_json")
#: The generator does not matter to a refusal; bicubic keeps the campaign fast.
MODEL = "bicubic"
#: Side (HR pixels) of the region restored / read over a damaged level-0 chunk.
PROBE = 64
_EMPTY = 2**64 - 1


@dataclass
class Shard:
    """One shard file of the pristine archive."""

    array: str
    key: str
    size: int
    #: (chunk id, offset, nbytes) of every stored chunk, in index order
    entries: list[tuple[str, int, int]]
    #: chunk ids of every index position (stored or not)
    positions: list[str]

    @property
    def path(self) -> str:
        return f"{self.array}/{self.key}"


@dataclass
class Damage:
    """One corruption and what it hits."""

    kind: str
    detail: str
    #: the array hit, or None when the damage is to the archive's metadata as a whole
    array: str | None = None
    #: chunk ids hit (verify should name one of them)
    chunks: list[str] = field(default_factory=list)


def _name(array: str, cid: str) -> str:
    """A chunk as ``verify`` and the reader name it."""
    parts = cid.split(".")
    if len(parts) == 3 and not array.startswith(ASSOCIATED_GROUP):
        return f"{array} row {parts[1]} col {parts[2]}"
    return f"{array} [{cid}]"


def _layout(archive: Path) -> list[Shard]:
    opened = Archive.open(archive)
    shards = []
    for name, record in sorted(opened.manifest.arrays.items()):
        for key in sorted(record.shards):
            coords = tuple(int(p) for p in key.split("/")[1:])
            ids = [chunk_id(c) for c in shard_chunks(record, coords)]
            data = (archive / name / key).read_bytes()
            index = read_shard_index(data, len(ids))
            entries = [(cid, e[0], e[1]) for cid, e in zip(ids, index) if e is not None]
            shards.append(Shard(name, key, len(data), entries, ids))
    return shards


def _write_index(data: bytearray, n: int, pairs: np.ndarray) -> None:
    raw = pairs.astype("<u8").tobytes()
    data[-(16 * n + 4) :] = raw + google_crc32c.value(raw).to_bytes(4, "little")


def _index_pairs(data: bytes, n: int) -> np.ndarray:
    return np.frombuffer(data[-(16 * n + 4) : -4], dtype="<u8").copy().reshape(n, 2)


# -- the corruptions ------------------------------------------------------------------------
def byte_flip(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    shard = rng.choice(shards)
    path = root / shard.path
    data = bytearray(path.read_bytes())
    offset = rng.randrange(len(data))
    mask = rng.randrange(1, 256)
    data[offset] ^= mask
    path.write_bytes(bytes(data))
    hit = [cid for cid, o, n in shard.entries if o <= offset < o + n]
    where = f"chunk {hit[0]}" if hit else "the shard index"
    return Damage(
        "byte_flip",
        f"{shard.path} byte {offset} ^= 0x{mask:02x} ({where})",
        shard.array,
        hit or [c for c, _, _ in shard.entries],
    )


def truncate(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    shard = rng.choice(shards)
    path = root / shard.path
    length = rng.randrange(shard.size)
    with open(path, "r+b") as f:
        f.truncate(length)
    return Damage(
        "truncate", f"{shard.path} cut to {length} of {shard.size} bytes", shard.array, [c for c, _, _ in shard.entries]
    )


def delete_shard(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    shard = rng.choice(shards)
    (root / shard.path).unlink()
    return Damage("delete_shard", f"{shard.path} deleted", shard.array, [c for c, _, _ in shard.entries])


def edit_manifest(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    path = root / MANIFEST_KEY
    text = path.read_bytes()
    manifest = json.loads(text)
    arrays = manifest["arrays"]
    name = rng.choice(sorted(arrays))
    record = arrays[name]
    variant = rng.choice(["flip", "chunk_crc", "chunk_size", "drop_chunk", "drop_shard", "sha", "shape", "cut", "gone"])
    detail = variant
    if variant == "flip":
        data = bytearray(text)
        offset = rng.randrange(len(data))
        data[offset] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
        return Damage("edit_manifest", f"byte {offset} flipped")
    if variant == "cut":
        path.write_bytes(text[: rng.randrange(len(text))])
        return Damage("edit_manifest", "torn")
    if variant == "gone":
        path.unlink()
        return Damage("edit_manifest", "deleted")
    if variant in ("chunk_crc", "chunk_size", "drop_chunk") and record["chunks"]:
        cid = rng.choice(sorted(record["chunks"]))
        if variant == "drop_chunk":  # the chunk would read as background by design
            del record["chunks"][cid]
        else:
            record["chunks"][cid][0 if variant == "chunk_size" else 1] += rng.randrange(1, 1000)
        detail = f"{variant} {_name(name, cid)}"
    elif variant in ("drop_shard", "sha"):
        key = rng.choice(sorted(record["shards"]))
        if variant == "drop_shard":
            del record["shards"][key]
        else:
            sha = record["shards"][key]["sha256"]
            record["shards"][key]["sha256"] = ("0" if sha[0] != "0" else "1") + sha[1:]
        detail = f"{variant} {name}/{key}"
    else:
        record["shape"][-1] += rng.randrange(1, 64)
        detail = f"shape of {name}"
    path.write_bytes(json.dumps(manifest, indent=1, sort_keys=True).encode())
    return Damage("edit_manifest", detail)


def swap_chunk(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    """Chunks in the wrong place, every one intact: only the manifest can tell."""
    by_size: dict[int, list[Shard]] = {}
    for s in shards:
        by_size.setdefault(s.size, []).append(s)
    twins = [group for group in by_size.values() if len(group) > 1]
    multi = [s for s in shards if len(s.entries) > 1]
    variant = rng.choice(["within", "within", "transplant"] + (["files"] if twins else []))
    if variant == "within" and multi:
        shard = rng.choice(multi)
        (a, oa, na), (b, ob, nb) = rng.sample(shard.entries, 2)
        path = root / shard.path
        data = bytearray(path.read_bytes())
        n = len(shard.positions)
        pairs = _index_pairs(data, n)
        ia, ib = shard.positions.index(a), shard.positions.index(b)
        pairs[[ia, ib]] = pairs[[ib, ia]]
        _write_index(data, n, pairs)
        path.write_bytes(bytes(data))
        return Damage("swap_chunk", f"{shard.path}: index entries of {a} and {b} exchanged", shard.array, [a, b])
    if variant == "files":
        s1, s2 = rng.sample(rng.choice(twins), 2)
        p1, p2 = root / s1.path, root / s2.path
        d1, d2 = p1.read_bytes(), p2.read_bytes()
        p1.write_bytes(d2)
        p2.write_bytes(d1)
        hit = [c for c, _, _ in s1.entries]
        return Damage("swap_chunk", f"shard files {s1.path} and {s2.path} exchanged", s1.array, hit)
    # transplant: a chunk of another shard replaces one of this shard's, index rewritten to match
    target = rng.choice([s for s in shards if s.entries])
    donors = [(s, e) for s in shards if s is not target for e in s.entries]
    donor, (dcid, doff, dn) = rng.choice(donors)
    victim = rng.choice(target.entries)
    old = (root / target.path).read_bytes()
    chunk = (root / donor.path).read_bytes()[doff : doff + dn]
    n = len(target.positions)
    body = bytearray()
    pairs = np.full((n, 2), _EMPTY, dtype=np.uint64)
    for cid, off, nb in target.entries:
        piece = chunk if cid == victim[0] else old[off : off + nb]
        pairs[target.positions.index(cid)] = (len(body), len(piece))
        body += piece
    body += bytes(16 * n + 4)
    _write_index(body, n, pairs)
    (root / target.path).write_bytes(bytes(body))
    return Damage(
        "swap_chunk",
        f"{target.path}: chunk {victim[0]} replaced by {donor.array} chunk {dcid}",
        target.array,
        [victim[0]],
    )


def _edit_value(meta: dict[str, Any], path: list[Any], rng: random.Random) -> str:
    """Change the value at ``path`` inside ``meta``; returns what was done."""
    node = meta
    for part in path[:-1]:
        node = node[part]
    key = path[-1]
    value = node[key]
    if isinstance(value, bool):
        node[key] = not value
    elif isinstance(value, int):
        node[key] = value + rng.choice([-1, 1, value or 1])
    elif isinstance(value, float):
        node[key] = value * rng.choice([0.5, 2.0, 1.001])
    elif isinstance(value, str):
        node[key] = value[::-1] + "x"
    elif isinstance(value, list):
        node[key] = value[:-1] if len(value) > 1 else [*value, "edited"]
    else:
        node[key] = "edited"
    return f"{'.'.join(map(str, path))}: {value!r} -> {node[key]!r}"


#: Fields of the group's ``wsistore`` block that say how to read the pixels (the descriptive
#: ones - dates, software, vendor properties - are covered by no checksum in the format).
_GROUP_FIELDS: list[list[Any]] = [
    ["scale"],
    ["fill_value"],
    ["chunk"],
    ["shard"],
    ["manifest_sha256"],
    ["format_version"],
    ["codec", "name"],
    ["codec", "configuration", "pixelformat"],
    ["levels", 0, "width"],
    ["levels", 0, "height"],
    ["levels", 1, "downsample"],
    ["levels", -1, "path"],
    ["levels"],
    ["source", "width"],
    ["source", "height"],
    ["source", "mpp_x"],
    ["tissue", "chunks_total"],
    ["tissue", "chunks_written"],
    ["associated_images"],
]
_ARRAY_FIELDS: list[list[Any]] = [
    ["shape", -1],
    ["shape", 1],
    ["data_type"],
    ["chunk_grid", "configuration", "chunk_shape", -1],
    ["chunk_key_encoding", "configuration", "separator"],
    ["codecs", 0, "configuration", "chunk_shape", -1],
    ["codecs", 0, "configuration", "index_location"],
    ["codecs", 0, "configuration", "codecs"],
    ["codecs", 0, "configuration", "index_codecs"],
]
_LEVEL_FIELDS: list[list[Any]] = [
    ["fill_value"],
    ["dimension_names"],
    ["codecs", 0, "configuration", "codecs", 0, "configuration", "order"],
    ["codecs", 0, "configuration", "codecs", 1, "name"],
    ["codecs", 0, "configuration", "codecs", 1, "configuration", "pixelformat"],
]


def edit_zarr_json(root: Path, shards: list[Shard], rng: random.Random) -> Damage:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("zarr.json"))
    levels = [f for f in files if f.split("/")[0].isdigit()]
    others = [f for f in files if f != "zarr.json" and f not in levels]
    # the group's metadata says how to read everything: it gets the most edits
    rel = rng.choice(rng.choices([["zarr.json"], levels, others], weights=[4, 3, 3])[0])
    path = root / rel
    text = path.read_bytes()
    variant = rng.choices(["value", "torn", "gone"], weights=[8, 1, 1])[0]
    array = rel.rsplit("/", 1)[0] if "/" in rel else None
    if variant == "torn":
        path.write_bytes(text[: rng.randrange(len(text))])
        return Damage("edit_zarr_json", f"{rel} torn", array)
    if variant == "gone":
        path.unlink()
        return Damage("edit_zarr_json", f"{rel} deleted", array)
    meta = json.loads(text)
    if rel == "zarr.json":
        edits = [["attributes", "wsistore", *p] for p in _GROUP_FIELDS]
        edits.append(["attributes", "ome", "multiscales", 0, "datasets", 0, "coordinateTransformations", 0, "scale"])
    elif meta.get("node_type") != "array":
        edits = [["node_type"], ["zarr_format"]]
    else:
        level = array is not None and array.isdigit()
        edits = _ARRAY_FIELDS + (_LEVEL_FIELDS if level else [])
    done = _edit_value(meta, rng.choice(edits), rng)
    path.write_text(json.dumps(meta, indent=2))
    return Damage("edit_zarr_json", f"{rel} {done}", array)


CORRUPTIONS = {
    "byte_flip": byte_flip,
    "truncate": truncate,
    "delete_shard": delete_shard,
    "edit_manifest": edit_manifest,
    "swap_chunk": swap_chunk,
    "edit_zarr_json": edit_zarr_json,
}


# -- the checks -----------------------------------------------------------------------------
@dataclass
class Probe:
    """Where to look for the damage through restore and ``wsistore.open``."""

    #: level-0 region for restore, or None for the whole slide
    region: tuple[int, int, int, int] | None
    #: (location in level-0 pixels, OpenSlide level, size) for read_region, or an associated image name
    read: tuple[tuple[int, int], int, tuple[int, int]] | str | None
    #: restore never reads the damaged array (level 1 with a 4x TIFF pyramid, associated images, mask)
    restore_applies: bool = True


def _probe(pristine: Archive, damage: Damage, rng: random.Random) -> Probe:
    md = pristine.metadata
    levels = {lv.path: i for i, lv in enumerate(md.levels)}
    tissue = sorted(pristine.manifest.arrays["0"].chunks)
    array, chunks = damage.array, damage.chunks
    if array is None or array not in levels or not chunks:
        if array is not None and array.startswith(ASSOCIATED_GROUP):
            name = array.split("/", 1)[1] if "/" in array else pristine.associated_image_names[0]
            return Probe(None, name, restore_applies=False)
        if array is not None and array not in levels and array in pristine.manifest.arrays:
            return Probe(None, None, restore_applies=False)  # mask, loss map, ICC profile: read by name below
        array, chunks = "0", [rng.choice(tissue)]  # metadata damage: any tissue chunk must be refused
    level = levels[array]
    info = md.levels[level]
    reader = pristine.level(level)
    _, r, q = (int(p) for p in chunks[0].split("."))
    ch, cw = reader.chunk_hw
    x0, y0 = q * cw, r * ch
    x1, y1 = min(x0 + cw, reader.width), min(y0 + ch, reader.height)
    d = info.downsample
    if level == 0:
        cx = min(max((x0 + x1) // 2 * d - PROBE // 2, 0), md.width - PROBE)
        cy = min(max((y0 + y1) // 2 * d - PROBE // 2, 0), md.height - PROBE)
        return Probe((cx, cy, PROBE, PROBE), ((cx, cy), 0, (PROBE, PROBE)))
    # restore copies LR level L into the output only when its downsample is a power of the
    # TIFF pyramid's factor (4): level 2 (16x) yes, level 1 (8x) no
    power = d
    while power % 4 == 0:
        power //= 4
    return Probe(None, ((x0 * d, y0 * d), level + 1, (x1 - x0, y1 - y0)), restore_applies=power == 1)


def _refuses(call: Any, glass: np.ndarray) -> tuple[bool, str]:
    """Whether ``call()`` raises a WsistoreError; else what it did."""
    try:
        pixels = call()
    except WsistoreError as exc:
        return True, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # refused, but not clearly: still a miss
        return False, f"raised {type(exc).__name__} (not a WsistoreError): {str(exc)[:160]}"
    if pixels is None:
        return False, "returned without error"
    rgb = np.asarray(pixels)[..., :3]
    painted = bool(rgb.size) and bool((rgb == glass).all())
    return False, "returned pixels" + (", painted as background" if painted else "")


def _check_case(copy: Path, pristine: Archive, damage: Damage, probe: Probe, out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        report = verify(copy, progress=False, workers=1)
        problems = report.problems
        result["verify"] = problems[:3]
    except ArchiveError as exc:
        problems = [str(exc)]
        result["verify"] = problems
    except Exception as exc:
        problems = []
        result["verify"] = [f"raised {type(exc).__name__}: {exc}"]
    result["detected"] = bool(problems) and not result["verify"][0].startswith("raised ")
    if damage.array is not None and damage.chunks:
        names = [_name(damage.array, c) for c in damage.chunks]
        result["nameable"] = True
        result["named"] = any(n in p for p in problems for n in names)
    glass = np.asarray(pristine.metadata.tissue.background_rgb, dtype=np.uint8)

    if probe.restore_applies:
        target = out / "restored.tiff"
        options = RestoreOptions(model=MODEL, region=probe.region, progress=False, workers=1)

        def restore() -> np.ndarray:
            wsistore.restore(copy, target, options)
            return np.asarray(tifffile.imread(target, level=0))

        refused, why = _refuses(restore, glass)
        if refused and target.exists():
            refused, why = False, f"refused ({why}) but left {target.name} looking complete"
        result["restore"] = (refused, why)

    def read() -> Any:
        if probe.read is None:  # the tissue mask, the loss map or the ICC profile
            opened = Archive.open(copy)
            assert damage.array is not None
            if damage.array == "loss_map":
                return opened.loss_map()
            return opened.tissue_mask if damage.array == "tissue_mask" else opened.icc_profile
        slide = wsistore.open(copy, model=MODEL, workers=1)
        try:
            if isinstance(probe.read, str):
                return slide.associated_images[probe.read]
            location, level, size = probe.read
            return slide.read_region(location, level, size)
        finally:
            slide.close()

    result["open"] = _refuses(read, glass)
    return result


def run_damage(archive: Path, count: int, seed: int, workdir: Path) -> dict[str, Any]:
    """Apply ``count`` seeded corruptions to copies of ``archive`` (in ``workdir``) and
    check that verify, restore and ``wsistore.open`` each catch every one."""
    start = time.perf_counter()
    rng = random.Random(seed)
    pristine = Archive.open(archive)
    shards = _layout(archive)
    kinds: Counter[str] = Counter()
    totals = Counter[str]()
    missed: list[dict[str, Any]] = []
    cases = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        copy = workdir / f"case{i:04d}" / "archive.zarr"
        shutil.copytree(archive, copy)
        damage = CORRUPTIONS[kind](copy, shards, rng)
        probe = _probe(pristine, damage, rng)
        result = _check_case(copy, pristine, damage, probe, copy.parent)
        kinds[kind] += 1
        totals["detected"] += result["detected"]
        totals["nameable"] += result.get("nameable", False)
        totals["named_chunk"] += result.get("named", False)
        failures = []
        if not result["detected"]:
            failures.append(f"verify: {result['verify']}")
        if result.get("nameable") and not result["named"]:
            failures.append(f"verify did not name {damage.chunks}: {result['verify']}")
        for check in ("restore", "open"):
            if check in result:
                totals[f"{check}_checked"] += 1
                refused, why = result[check]
                totals[f"{check}_refused"] += refused
                if not refused:
                    failures.append(f"{check}: {why}")
        if failures:
            missed.append({"case": i, "kind": kind, "damage": damage.detail, "failures": failures})
        cases.append({"case": i, "kind": kind, "damage": damage.detail, **result})
        shutil.rmtree(copy.parent)
    return {
        "archive": str(archive),
        "seed": seed,
        "corruptions": count,
        "detected": totals["detected"],
        "named_chunk": totals["named_chunk"],
        "nameable": totals["nameable"],
        "restore_checked": totals["restore_checked"],
        "restore_refused": totals["restore_refused"],
        "open_checked": totals["open_checked"],
        "open_refused": totals["open_refused"],
        "kinds": dict(kinds),
        "missed": missed,
        "seconds": round(time.perf_counter() - start, 1),
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=120, help="corruptions (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slide", type=Path, default=SLIDE, help="real slide to ingest (default: the CMU-1 SVS)")
    parser.add_argument("--archive", type=Path, help="an existing archive to damage copies of, instead of ingesting")
    parser.add_argument("--json", type=Path, help="also write the full result (every case) here")
    parser.add_argument("--cases", action="store_true", help="print every case, not just the totals and misses")
    args = parser.parse_args(argv)
    from wsistore.archive.writer import IngestOptions

    with tempfile.TemporaryDirectory(prefix="wsistore-damage-") as tmp:
        archive = args.archive
        if archive is None:
            archive = Path(tmp) / "pristine.zarr"
            wsistore.ingest(args.slide, archive, IngestOptions(progress=False))
        result = run_damage(archive, args.count, args.seed, Path(tmp) / "cases")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    shown = result if args.cases else {k: v for k, v in result.items() if k != "cases"}
    print(json.dumps(shown, indent=1, default=str))
    return 0 if not result["missed"] and result["detected"] == result["corruptions"] else 1


if __name__ == "__main__":
    sys.exit(main())
