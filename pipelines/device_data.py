"""Carry prepared training data to a GPU machine that has no codecs, in a few tens of MB.

A prepared folder (``wsistore train prepare``) repeats its pixels many times: every patch
is a crop of one of a few variant images, and random positions overlap. The device tool
carries at most 64 MiB, and the GPU machine has numpy and Pillow but no imagecodecs, zarr
or dask. So ``pack`` keeps each source tile once (WebP lossless) and each variant's LR
exactly as the archive stores it once (WebP lossless of the decoded codec output), with
every set's manifest and patch index; ``unpack`` cuts the same ``.lr.npy``/``.hr.npy``
shards back out, byte for byte (``pack --check`` proves it on this machine first).

Variants with a dihedral transform or stain jitter are not supported (their HR is not a
crop of the tile): prepare with ``--phases`` only and train with ``data.flips``.

    python -m pipelines.device_data pack data/g-ood-q75 data/g-ood-q60 .gpu/pack --check
    python pipelines/device_data.py unpack .gpu/pack /tmp/data    # on the GPU machine

``unpack`` needs only numpy and Pillow, so it runs as a plain script there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def _webp(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6, exact=True)
    return buffer.getvalue()


def _store(folder: Path, image: np.ndarray) -> str:
    """Write ``image`` once under its content hash; returns the file name."""
    name = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:20] + ".webp"
    path = folder / name
    if not path.exists():
        path.write_bytes(_webp(image))
    return name


def pack(sets: list[Path], out: Path) -> None:
    """Pack prepared folders ``sets`` into ``out`` (tiles and variant LR images, once each)."""
    from wsistore.codecs import codec_from_config
    from wsistore.degradation import Downsample
    from wsistore.training.prepare import ArchivedLR, Variant, open_source, variant_source

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for root in sets:
        manifest = json.loads((root / "manifest.json").read_text())
        codec = codec_from_config(manifest["codec"]) if manifest["codec"] else None
        scale, chunk = manifest["scale"], manifest["chunk"]
        down = Downsample(scale)
        files = []
        for record in manifest["files"]:
            source = open_source(Path(record["path"]))
            try:
                tile = source.read((0, 0, source.width, source.height))
                entry = {"hr": _store(images, np.ascontiguousarray(tile)), "lr": {}}
                for v in record["variants"]:
                    if v["transform"] or v["stain"]:
                        raise SystemExit(f"{root}: dihedral or stained variants cannot be packed")
                    image = variant_source(source, Variant(0, tuple(v["offset"])), scale)
                    archived = ArchivedLR(image, down, codec, chunk, v["fill"])
                    lr = archived.region(0, 0, archived.width, archived.height)
                    entry["lr"]["{},{}".format(*v["offset"])] = _store(images, lr)
                files.append(entry)
            finally:
                source.close()
        target = out / "sets" / root.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "manifest.json", target / "manifest.json")
        for shard in manifest["shards"]:
            shutil.copy(root / shard["index"], target / shard["index"])
        (target / "images.json").write_text(json.dumps(files))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed {len(sets)} sets into {out}: {size / 1e6:.1f} MB")


def unpack(packed: Path, out: Path, only: str | None = None) -> list[Path]:
    """Rebuild every packed set (or the one named ``only``) as a prepared folder under ``out``."""
    cache: dict[str, np.ndarray] = {}

    def image(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = np.asarray(Image.open(packed / "images" / name).convert("RGB"))
        return cache[name]

    made = []
    for target in sorted((packed / "sets").iterdir()):
        if only is not None and target.name != only:
            continue
        manifest = json.loads((target / "manifest.json").read_text())
        files = json.loads((target / "images.json").read_text())
        s, p = manifest["scale"], manifest["patch"]
        folder = out / target.name
        folder.mkdir(parents=True, exist_ok=True)
        for shard in manifest["shards"]:
            index = np.load(target / shard["index"])
            lr = np.empty((len(index), 3, p, p), np.uint8)
            hr = np.empty((len(index), 3, s * p, s * p), np.uint8)
            for i, (number, x, y, _transform, ox, oy) in enumerate(index.tolist()):
                entry = files[number]
                low = image(entry["lr"][f"{ox},{oy}"])
                lr[i] = low[y : y + p, x : x + p].transpose(2, 0, 1)
                hx, hy = s * (ox + x), s * (oy + y)
                hr[i] = image(entry["hr"])[hy : hy + s * p, hx : hx + s * p].transpose(2, 0, 1)
            np.save(folder / shard["lr"], lr)
            np.save(folder / shard["hr"], hr)
            shutil.copy(target / shard["index"], folder / shard["index"])
        shutil.copy(target / "manifest.json", folder / "manifest.json")
        made.append(folder)
    return made


def check(sets: list[Path], packed: Path, scratch: Path) -> None:
    """Unpack into ``scratch`` and compare every shard with the original, byte for byte."""
    for folder in unpack(packed, scratch):
        original = next(r for r in sets if r.name == folder.name)
        manifest = json.loads((original / "manifest.json").read_text())
        for shard in manifest["shards"]:
            for key in ("lr", "hr", "index"):
                a, b = np.load(original / shard[key]), np.load(folder / shard[key])
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise SystemExit(f"{folder.name}/{shard[key]} differs after unpacking")
        print(f"{folder.name}: every shard identical after unpacking")
    shutil.rmtree(scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--check", action="store_true", help="unpack again here and compare with the originals")
    u = sub.add_parser("unpack")
    u.add_argument("packed", type=Path)
    u.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.sets, args.out)
        if args.check:
            check(args.sets, args.out, args.out.parent / (args.out.name + ".check"))
    else:
        for folder in unpack(args.packed, args.out):
            print(f"unpacked {folder}")


if __name__ == "__main__":
    main()
