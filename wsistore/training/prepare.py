"""``wsistore train prepare``: slides and tile folders -> (LR, HR) patch shards.

The LR side of every pair is what an archive would store: the one downsample of
:mod:`wsistore.degradation`, then the archive's codec applied chunk by chunk on the
archive's own grid (origin at the image's top-left, ``chunk`` LR pixels, edge chunks
padded to a full chunk with the archive's fill value before coding, as zarr stores
them). :func:`options_like` (``--like ARCHIVE``) takes scale, codec and chunk from an existing archive.

Only patches that are mostly tissue are kept; whole files are held out for
validation, chosen deterministically and recorded in the manifest.

More pairs from every training file, each still exactly what an archive stores:

* ``dihedral``: the 8 flips/rotations are applied to the HR image *before* it is
  downsampled and coded, so every variant's LR is what an archive of that transformed
  image would store (flipping coded LR would flip the codec's artefacts too);
* ``phases``: the image is also cropped by seeded LR offsets before degradation, which
  moves the archive's chunk grid (and its edge padding) across the content;
* ``positions = "random"``: seeded random, overlapping patch origins instead of one
  non-overlapping grid;
* ``stain_jitter = s``: every training variant's HR is first re-stained in HED space
  (Tellez et al. 2018: each of haematoxylin, eosin and DAB scaled by a seeded factor in
  [1 - s, 1 + s] and shifted by one in [-s, s], ``skimage.color`` deconvolution), so the
  model sees stains from other labs; the LR is made from the re-stained HR.

Validation files always give the identity variant on the grid: what the archive of the
real file stores, the same patches whatever the training options.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsistore._version import software_versions
from wsistore.archive.partial import write_complete
from wsistore.checksums import sha256_file
from wsistore.codecs import ImageCodec, make_codec
from wsistore.degradation import Downsample, code_on_grid, read_window
from wsistore.errors import InputError
from wsistore.geometry import Box
from wsistore.outputs import OutputKind, read_json_file
from wsistore.progress import Progress
from wsistore.readers import ArraySlide, SlideReader, image_files, input_kind, open_input
from wsistore.tissue import detect_tissue
from wsistore.training.shards import FORMAT, MANIFEST, VERSION, ShardWriter

#: Licences of the project's shared development data, by file-name pattern (first match;
#: ``--licence PATTERN=TEXT`` entries are tried before these).
KNOWN_LICENCES = (
    ("*_monuseg_*", "CC BY-NC-SA 4.0 (MoNuSeg, Kumar et al. IEEE TMI 2017; non-commercial, share-alike)"),
    ("*_histolab_*", "Apache-2.0 (histolab test fixtures; pixels from TCGA open-access slides)"),
    (
        "*_monusac_*",
        "CC BY-NC-SA 4.0 (MoNuSAC 2020, Verma et al. IEEE TMI 2021; non-commercial, share-alike; TCGA open access)",
    ),
    ("*_cryonuseg_*", "MIT (CryoNuSeg repository; pixels from TCGA open-access slides)"),
    ("*_amida13_*", "MIT-style (staining-normalization repository, Veta 2015; AMIDA13 challenge images)"),
    ("*_deepliif-*", "Apache-2.0 with Commons Clause (DeepLIIF repository; no selling)"),
    ("*_skimage-*", "BSD-3-Clause (scikit-image data; no known copyright restrictions)"),
    ("*_kather-*", "MIT (ColorDeconvolutionMatlab, Kather 2015)"),
    ("*cmu1*", "CC0 1.0 (OpenSlide test data CMU-1)"),
)
UNKNOWN_LICENCE = "unknown (not given: pass --licence PATTERN=TEXT)"
POSITIONS = ("grid", "random")
#: slides larger than this (pixels) are not read whole, so they give the identity variant only
WHOLE_IMAGE_LIMIT = 64_000_000
#: random positions: candidate draws per patch wanted
RANDOM_DRAWS = 8


@dataclass(frozen=True)
class PrepareOptions:
    """How to cut patches; ``codec`` None means lossless LR (no coding)."""

    scale: int = 4
    codec: ImageCodec | None = field(default_factory=make_codec)
    chunk: int = 256
    patch: int = 64
    patches_per_file: int = 64
    min_tissue: float = 0.5
    val_fraction: float = 0.15
    val_files: tuple[str, ...] = ()
    seed: int = 0
    shard_size: int = 512
    licences: tuple[tuple[str, str], ...] = ()
    #: source sha256 -> the fill value its archive recorded (else computed as ingest does)
    fills: tuple[tuple[str, int], ...] = ()
    like: str | None = None
    #: "grid": one non-overlapping grid at a random offset; "random": random origins
    positions: str = "grid"
    #: the 8 dihedral transforms of each training image, applied before degradation
    dihedral: bool = False
    #: chunk-grid phases per training image (1 = the image as it is)
    phases: int = 1
    #: HED stain jitter of every training variant, applied before degradation (0: none)
    stain_jitter: float = 0.0
    reader: str = "auto"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.patch < 4 or self.patches_per_file < 1 or self.shard_size < 1:
            raise InputError("patch must be >= 4, patches_per_file and shard_size >= 1")
        if self.chunk < 16 or self.chunk % 16:
            raise InputError(f"chunk must be a multiple of 16, got {self.chunk}")
        if self.positions not in POSITIONS:
            raise InputError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.phases < 1:
            raise InputError("phases must be >= 1")
        if not 0 <= self.stain_jitter < 0.5:
            raise InputError(f"stain_jitter must be in [0, 0.5), got {self.stain_jitter}")
        if not 0 <= self.min_tissue <= 1 or not 0 <= self.val_fraction < 1:
            raise InputError("min_tissue must be in [0, 1] and val_fraction in [0, 1)")
        try:
            Downsample(self.scale)
        except ValueError as exc:
            raise InputError(str(exc)) from None


def options_like(archive: str | os.PathLike[str], **overrides: Any) -> PrepareOptions:
    """Options that degrade exactly as ``archive`` did (scale, codec, chunk, and its
    fill value for its own source)."""
    from wsistore.archive.reader import Archive
    from wsistore.degradation import DOWNSAMPLE_VERSION

    a = Archive.open(archive)
    m = a.metadata
    if m.downsample.get("version") != DOWNSAMPLE_VERSION:
        raise InputError(
            f"{archive}: downsample version {m.downsample.get('version')} differs from this wsistore's "
            f"{DOWNSAMPLE_VERSION}"
        )
    codec = None if a.codec.lossless else a.codec
    return PrepareOptions(
        scale=m.scale,
        codec=codec,
        chunk=m.chunk,
        fills=((m.source.sha256, m.fill_value),),
        like=str(archive),
        **overrides,
    )


def archive_source(archive: Path, options: PrepareOptions) -> tuple[Path, PrepareOptions]:
    """The source slide of an archive given as a SOURCE (it must lie beside the archive
    and match the recorded sha256), and options extended with its fill value. The
    archive must have been made with the same scale, codec and chunk as ``options``."""
    like = options_like(archive)
    codec = lambda o: o.codec.to_dict() if o.codec is not None else None  # noqa: E731
    if (like.scale, like.chunk, codec(like)) != (options.scale, options.chunk, codec(options)):
        raise InputError(
            f"{archive} was made with another scale, codec or chunk than this prepare "
            "(take them from the archive; one codec per prepared set)"
        )
    from wsistore.archive.reader import Archive

    source = Archive.open(archive).metadata.source
    path = archive.parent / source.file_name
    if not path.is_file():
        raise InputError(f"{archive}: training needs its source; put {source.file_name} beside the archive")
    if sha256_file(path) != source.sha256:
        raise InputError(f"{path} is not the file {archive} was made from (sha256 differs)")
    return path, dataclasses.replace(options, fills=options.fills + like.fills)


@dataclass
class Source:
    """One input image: a tile read whole, or a slide read region by region."""

    path: Path
    kind: str
    width: int
    height: int
    read: Callable[[Box], np.ndarray]
    reader: SlideReader
    close: Callable[[], None]


def open_source(path: Path, reader: str = "auto") -> Source:
    """Open a tile (read whole) or a slide (read by region) with :func:`~wsistore.readers.open_input`."""
    slide = open_input(path, reader)
    return _source(path, "tile" if isinstance(slide, ArraySlide) else "slide", slide)


def _source(path: Path, kind: str, slide: SlideReader) -> Source:
    """A :class:`Source` that reads level 0 of ``slide``."""
    w, h = slide.dimensions

    def read(b: Box) -> np.ndarray:
        return slide.read_region((b[0], b[1]), 0, (b[2] - b[0], b[3] - b[1]))

    return Source(path, kind, w, h, read, slide, slide.close)


class ArchivedLR:
    """The LR image of a source exactly as an archive stores it, chunk by chunk (cached)."""

    def __init__(self, source: Source, down: Downsample, codec: ImageCodec | None, chunk: int, fill: int) -> None:
        self.source, self.down, self.codec, self.chunk, self.fill = source, down, codec, chunk, fill
        self.width, self.height = down.lr_size(source.width, source.height)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def chunk_at(self, row: int, col: int) -> np.ndarray:
        key = (row, col)
        if key not in self._cache:
            c = self.chunk
            box = (col * c, row * c, min((col + 1) * c, self.width), min((row + 1) * c, self.height))
            window = read_window(self.source.read, self.down.hr_window(*box), self.source.width, self.source.height)
            lr = self.down.reduce_window(window)
            if self.codec is not None:
                lr = code_on_grid(lr, self.codec, c, self.fill, (row * c, col * c))
            self._cache[key] = lr
        return self._cache[key]

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """LR pixels of box ``(x0, y0, x1, y1)`` (inside the LR image)."""
        c = self.chunk
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        for row in range(y0 // c, (y1 - 1) // c + 1):
            for col in range(x0 // c, (x1 - 1) // c + 1):
                tile = self.chunk_at(row, col)
                ty0, tx0 = max(y0, row * c), max(x0, col * c)
                ty1, tx1 = min(y1, row * c + tile.shape[0]), min(x1, col * c + tile.shape[1])
                ry, rx = row * c, col * c
                out[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = tile[ty0 - ry : ty1 - ry, tx0 - rx : tx1 - rx]
        return out


def expand_sources(sources: list[str], options: PrepareOptions) -> tuple[list[Path], PrepareOptions]:
    """Files named, image/slide files found (recursively) in folders named, and the
    source slides of archives named; sorted by name. Options gain the archives' fills."""
    found: list[Path] = []
    for item in sources:
        path = Path(item)
        kind = input_kind(path)
        if kind == "archive":
            source, options = archive_source(path, options)
            found.append(source)
        elif kind == "folder":
            found += image_files(path, recursive=True)
        else:
            found.append(path)
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: (p.name, str(p)))
    if not unique:
        raise InputError(f"no images or slides in {', '.join(sources)}")
    names = [p.name for p in unique]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two source files are both named {duplicates[0]} (the split is by file name)")
    return unique, options


def choose_validation(names: list[str], options: PrepareOptions) -> set[str]:
    """Files held out: those named by ``val_files``, else a seeded hash order's first
    ``round(val_fraction * n)`` (at least one when there are two or more files)."""
    if options.val_files:
        chosen = {n for n in names if n in options.val_files or Path(n).stem in options.val_files}
        missing = [v for v in options.val_files if v not in names and v not in {Path(n).stem for n in names}]
        if missing:
            raise InputError(f"validation file {missing[0]} is not among the sources")
        return chosen
    if options.val_fraction == 0 or len(names) < 2:
        return set()
    count = min(len(names) - 1, max(1, round(options.val_fraction * len(names))))
    order = sorted(names, key=lambda n: hashlib.sha256(f"{options.seed}:{n}".encode()).hexdigest())
    return set(order[:count])


def licence_of(name: str, options: PrepareOptions) -> str:
    for pattern, text in (*options.licences, *KNOWN_LICENCES):
        if fnmatch.fnmatch(name, pattern):
            return text
    return UNKNOWN_LICENCE


def patch_positions(
    source: Source, options: PrepareOptions, count: int, rng: np.random.Generator
) -> tuple[list[tuple[int, int]], int, int]:
    """LR origins of tissue patches (HR inside the image) in a seeded order, the number
    of candidates looked at, and the fill value an archive of this source would use.
    Grid positions start at a random offset, so no JPEG 8x8 phase of the source
    dominates; random positions (``count * RANDOM_DRAWS`` draws for ``count`` wanted)
    may overlap but never repeat."""
    s, p = options.scale, options.patch
    nx, ny = source.width // s - p, source.height // s - p
    mask = detect_tissue(source.reader)
    fill = mask.fill_value
    if nx < 0 or ny < 0:
        return [], 0, fill
    if options.positions == "grid":
        ox, oy = (int(v) for v in rng.integers(0, p, size=2))
        xs = list(range(ox % (nx + 1), nx + 1, p)) or [0]
        ys = list(range(oy % (ny + 1), ny + 1, p)) or [0]
        drawn = [(x, y) for y in ys for x in xs]
    else:
        draws = rng.integers(0, [nx + 1, ny + 1], size=(count * RANDOM_DRAWS, 2))
        drawn = list(dict.fromkeys((int(x), int(y)) for x, y in draws))
    cell = mask.cell
    candidates = []
    for x, y in drawn:
        cells = mask.tissue[s * y // cell : -(-s * (y + p) // cell), s * x // cell : -(-s * (x + p) // cell)]
        if cells.size and cells.mean() >= options.min_tissue:
            candidates.append((x, y))
    order = rng.permutation(len(candidates))
    return [candidates[i] for i in order], len(drawn), fill


@dataclass(frozen=True)
class Variant:
    """A training image made from a source: re-stained by ``stain`` (HED scale factors then
    shifts: :func:`restain`; empty: as scanned), dihedral ``transform`` (0-7: ``k % 4``
    quarter turns, then a left-right flip when ``k >= 4``), then cropped by the LR
    ``offset`` (x, y), all before degradation."""

    transform: int = 0
    offset: tuple[int, int] = (0, 0)
    stain: tuple[float, ...] = ()


def variants(source: Source, options: PrepareOptions, split: str, rng: np.random.Generator) -> list[Variant]:
    """The variants of one file: the identity for validation files and for slides too
    large to read whole; else every transform (or the identity) x ``phases`` offsets."""
    whole = source.kind == "tile" or source.width * source.height <= WHOLE_IMAGE_LIMIT
    if split != "train" or not whole:
        return [Variant()]
    s, p, c = options.scale, options.patch, options.chunk
    out = []
    for transform in range(8) if options.dihedral else (0,):
        width, height = (source.height, source.width) if transform % 2 else (source.width, source.height)
        # offsets that move the grid (1 .. chunk - 1) and keep room for a whole patch
        room = (min(c - 1, width // s - p), min(c - 1, height // s - p))
        out.append(Variant(transform, stain=_stain(options, rng)))
        for _ in range(options.phases - 1):
            offset = tuple(int(rng.integers(1, r + 1)) if r >= 1 else 0 for r in room)
            out.append(Variant(transform, (offset[0], offset[1]), _stain(options, rng)))
    return out


def _stain(options: PrepareOptions, rng: np.random.Generator) -> tuple[float, ...]:
    """A seeded HED jitter (3 scale factors, 3 shifts), or none."""
    s = options.stain_jitter
    if not s:
        return ()
    return tuple(round(float(v), 6) for v in (*rng.uniform(1 - s, 1 + s, 3), *rng.uniform(-s, s, 3)))


def restain(image: np.ndarray, stain: tuple[float, ...]) -> np.ndarray:
    """``image`` (uint8 RGB) with its haematoxylin, eosin and DAB densities (colour
    deconvolution, ``skimage.color.rgb2hed``) scaled by ``stain[:3]`` and shifted by
    ``stain[3:]``, back to uint8 RGB."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(image)
    hed = hed * np.asarray(stain[:3]) + np.asarray(stain[3:])
    return np.asarray(np.clip(np.round(hed2rgb(hed) * 255), 0, 255), dtype=np.uint8)


def variant_source(source: Source, variant: Variant, scale: int) -> Source:
    """``source`` transformed and cropped as ``variant`` says (the source itself for the identity)."""
    if variant == Variant():
        return source
    image = source.read((0, 0, source.width, source.height))
    if variant.stain:
        image = restain(image, variant.stain)
    image = np.rot90(image, variant.transform % 4)
    if variant.transform >= 4:
        image = image[:, ::-1]
    ox, oy = variant.offset
    image = np.ascontiguousarray(image[scale * oy :, scale * ox :])
    return _source(source.path, source.kind, ArraySlide(image, name=source.path.name))


def prepare(sources: list[str], out: str | os.PathLike[str], options: PrepareOptions) -> dict[str, Any]:
    """Write patch shards and their manifest to ``out``; returns the manifest."""
    out = Path(out)
    files, options = expand_sources(sources, options)
    settings = {"sources": [str(f) for f in files]}
    return write_complete(
        out,
        PREPARE_OUTPUT,
        options.overwrite,
        [*sources, *files],
        settings,
        lambda work: _prepare(files, work, options),
    )


def is_prepared_data(path: Path) -> bool:
    """Whether ``path`` is a folder that ``train prepare`` wrote (its manifest's format)."""
    manifest = read_json_file(path / MANIFEST)
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


#: What ``train prepare`` writes, and so all that ``--overwrite`` lets it replace.
PREPARE_OUTPUT = OutputKind("prepare", "training data that train prepare wrote", is_prepared_data)


def _prepare(files: list[Path], partial: Path, options: PrepareOptions) -> dict[str, Any]:
    held_out = choose_validation([f.name for f in files], options)
    writers = {split: ShardWriter(partial, split, options.shard_size) for split in ("train", "val")}
    down = Downsample(options.scale)
    records = []
    with Progress(len(files), "prepare", "file", options.progress) as bar:
        for number, path in enumerate(files):
            split = "val" if path.name in held_out else "train"
            bar.note(path.name)
            records.append(_prepare_file(number, path, split, writers[split], down, options))
            bar.update()
    for writer in writers.values():
        writer.flush()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "scale": options.scale,
        "patch": options.patch,
        "chunk": options.chunk,
        "codec": options.codec.to_dict() if options.codec is not None else None,
        "codec_label": options.codec.describe() if options.codec is not None else "lossless (no coding)",
        "downsample": down.describe(),
        "like": options.like,
        "edge_chunks": "padded to a full chunk with the archive fill value before coding",
        "min_tissue": options.min_tissue,
        "patches_per_file": options.patches_per_file,
        "positions": options.positions,
        "dihedral": options.dihedral,
        "phases": options.phases,
        "stain_jitter": options.stain_jitter,
        "variants": (
            "train files: HED re-staining, dihedral transform of the HR, then LR crop offset, all before "
            "downsampling and coding; val files: identity"
        ),
        "seed": options.seed,
        "split": {
            "rule": (
                "--val-file names"
                if options.val_files
                else f"seeded sha256 order of file names, first round({options.val_fraction} x files)"
            ),
            "val_files": sorted(held_out),
        },
        "counts": {split: w.count for split, w in writers.items()},
        "files": records,
        "licences": sorted({r["licence"] for r in records}),
        "shards": writers["train"].shards + writers["val"].shards,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software": software_versions("numpy", "imagecodecs"),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _prepare_file(
    number: int, path: Path, split: str, writer: ShardWriter, down: Downsample, options: PrepareOptions
) -> dict[str, Any]:
    digest = sha256_file(path)
    source = open_source(path, options.reader)
    made: list[dict[str, Any]] = []
    try:
        rng = np.random.default_rng([options.seed, int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)])
        chosen = variants(source, options, split, rng)
        per_variant = -(-options.patches_per_file // len(chosen))
        s, p = options.scale, options.patch
        for variant in chosen:
            image = variant_source(source, variant, s)
            how = options if split == "train" else dataclasses.replace(options, positions="grid")
            positions, drawn, fill = patch_positions(image, how, per_variant, rng)
            fill = dict(options.fills).get(digest, fill)
            archived = ArchivedLR(image, down, options.codec, options.chunk, fill)
            kept = positions[:per_variant]
            for x, y in kept:
                lr = archived.region(x, y, x + p, y + p)
                hr = image.read((s * x, s * y, s * (x + p), s * (y + p)))
                writer.add(lr, np.ascontiguousarray(hr), number, x, y, variant.transform, variant.offset)
            made.append(
                {
                    "transform": variant.transform,
                    "offset": list(variant.offset),
                    "stain": list(variant.stain),
                    "fill": fill,
                    "patches": len(kept),
                    "tissue": len(positions),
                    "candidates": drawn,
                }
            )
    finally:
        source.close()
    return {
        "name": path.name,
        "path": str(path.resolve()),
        "kind": source.kind,
        "bytes": path.stat().st_size,
        "sha256": digest,
        "fill": made[0]["fill"],
        "width": source.width,
        "height": source.height,
        "split": split,
        "licence": licence_of(path.name, options),
        "patches": sum(v["patches"] for v in made),
        "tissue_candidates": sum(v["tissue"] for v in made),
        "grid_candidates": sum(v["candidates"] for v in made),
        "variants": made,
    }
