"""The archive contract: layout, names and the typed ``wsistore`` metadata block.

An archive is a Zarr v3 group::

    ARCHIVE/
      zarr.json            group; attributes ``ome`` (NGFF 0.5 multiscales) and
                           ``wsistore`` (this module), written last
      manifest.json        every chunk written, with checksums; written just before
                           the group attributes
      0/ 1/ 2/ ...         the LR pyramid, uint8 (c, y, x); level 0 is the source / scale
      tissue_mask/         uint8 (rows, cols), 1 = tissue, one cell per ``mask_cell`` px
      loss_map/            float32 (rows, cols), one cell per chunk of level 0: what the
                           archive loses there (format 1.2; below)
      associated/label ... associated images, (c, y, x): lossless JPEG-XL, or the finest
                           JPEG-XL setting that is no larger than the source's own bytes
      icc_profile/         the source's ICC profile bytes, uint8 (n,)
      adaptation/          the per-slide adaptation of the generator, uint8 (n,) (format
                           1.4; below)
      hr/                  hybrid archives only (format 1.5; below): full-resolution level-0
                           pixels, uint8 (c, y, x), of the chunks kept at full resolution
      restorer/            each level-0 chunk's restorer, uint8 (rows, cols): 0 the generator,
                           1 bicubic (format 1.7; below)

Every array is sharded, with a crc32c on every chunk and on every shard index.

The loss map (format 1.2; 1.0 and 1.1 archives have none): cell ``[row, col]`` is the RMS,
in grey levels over all three channels, of the level-0 source pixels of LR chunk
``(row, col)`` (cropped to the slide) minus the bicubic upscale of that chunk as stored
(decoded): torch's bicubic, ``a = -0.75``, half-pixel centres, edges clamped at the chunk's
border, unclipped (:func:`wsistore.degradation.bicubic_upscale`). It is NaN for a background
chunk (not stored). It says where the archive is least faithful before any model is run:
the bicubic baseline's error, which super-resolution then reduces. In a hybrid archive (format
1.5) the cell of a chunk stored at full resolution holds that HR chunk's own loss instead: the
RMS of the source pixels (cropped to the slide) minus the decoded HR chunk, so each cell is the
loss of the path the chunk was stored on.

The ``wsistore`` block itself is covered by the manifest (format 1.3): the manifest records
:func:`metadata_digest` of the block, and the block records the manifest's sha256, so an
edit to any field (source name, vendor properties, tissue summary, ...) is detected; only
``created`` is left out, and 1.0-1.2 archives have no digest.

The adaptation (format 1.4; optional): ingest fine-tunes a small subset of the default
generator on the slide's own (LR as stored, HR) pairs (:mod:`wsistore.training.adapt`) and,
when its held-out gain pays for its bytes, stores the subset's values as ``adaptation/``
(:mod:`wsistore.models.adaptation` gives the byte layout). The block's ``adaptation`` field
says what it is: its sha256, the base generator's name and weights sha256, the subset, the
steps, the held-out gain and the rule that kept it. Restore applies it unless another
model is named. It is None when none was stored (then the field may still record why).

Hybrid archives (format 1.5; ``mode`` is ``hybrid``, else ``sr``): per level-0 chunk, ingest
chooses between the SR path (the LR chunk, restored by the generator) and the HR path (the
chunk's full-resolution pixels, coded with the HR codec; from format 1.8 at whichever of a few
settings costs least, each setting first weighed by a fast probe) as a rate-distortion decision (:data:`HR_RULE`,
:mod:`wsistore.archive.hybrid_choice`): the SR path's distortion is the SSE against the source
of what restore outputs for the chunk (the default generator for the LR codec, with the
adaptation when one is stored, on the canonical compute grid over level 0 as stored), the HR
path's the SSE of the decoded HR chunk; its rate the HR chunk's stored bytes. The HR chunks are
the array ``hr/``: the source's size, uint8 (c, y, x), chunk side ``scale x chunk`` (so HR chunk
``(row, col)`` covers LR chunk ``(row, col)``), shards of :func:`hr_shard_side`, a transpose to
(y, x, c), the HR codec (format 1.8: the first of its settings; each chunk is coded at one of
them, which its decoder does not need to know; an HR chunk at the slide's right or bottom edge is coded
at its extent inside the slide, as a codec on the whole image codes its last tiles, and the codec's
zarr decoder pads it with the fill value) and a crc32c per chunk like every image array, the level's fill value;
only the chosen chunks are written (a chunk not written is an SR chunk), each with its coding
PSNR against the source in the manifest (what ``verify --against`` checks). The LR pyramid stays
complete. In format 1.5 every tissue chunk keeps its LR chunk, HR or not. From format 1.6 the LR
chunk of an HR chunk is not stored (its bytes would be paid twice): ingest removes it from level 0
once every chunk's path is chosen, and readers derive it (:data:`ChunkState.DERIVED` in
:mod:`wsistore.archive.reader`): the 4x downsample (:meth:`wsistore.degradation.Downsample.reduce_region`,
the kernel folded at the HR chunk's edges) of the decoded HR chunk, cropped to the slide. So the
coarse levels (built from the LR as first coded), viewers and the generator's halo at the
neighbouring chunks read as before; the rule counts the LR chunk's bytes as saved (:data:`HR_RULE`).
Restore pastes the decoded HR chunk, cropped to the slide, over
the generator's output (:class:`wsistore.restoration.engine.TileRestorer`). The block's
``hybrid`` field records the HR codec, lambda, the rule, the chunk and shard sides, the SR path
(generator, weights and adaptation sha256, device) and, per mode, the chunks and their bytes
(:func:`wsistore.archive.manifest.chunk_modes`, checked against the manifest on open).

The restorer choice (format 1.7; written when ingest is given the SR path to measure, as the CLI
always is): a restored slide must never be worse than plain interpolation of what the archive
stores, so ingest compares, per tissue chunk, the SSE against the source of the generator's
output (with the adaptation) and of bicubic's, both as restore computes them, and stores in
``restorer/`` which restores each chunk (:data:`RESTORERS`; one cell per level-0 chunk, the
loss map's grid, uint8, fill 255 so the array is always written, a crc32c like every array,
listed in the manifest). A sample of chunks decides the whole slide when it agrees by a margin,
else every chunk is measured (:mod:`wsistore.archive.restorer_choice`); the block's
``restorers`` field records the rule, how it was applied, the chunks per restorer and the gains.
Restore with the archive's own generator pastes bicubic over those chunks; an archive without
the field (older formats, or not measured) is restored by the generator everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsistore.errors import ArchiveError
from wsistore.outputs import read_json_file

FORMAT_NAME = "wsistore"
FORMAT_VERSION = "1.8"
#: Versions this code reads.
READABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8")
#: The first version whose HR chunks have no stored LR chunk (derived on read).
DERIVED_LR_VERSION = "1.6"
#: Fields of the ``wsistore`` block its digest leaves out: the manifest's own hash (the digest is
#: in the manifest) and the creation time (so that the same slide and settings give the same bytes).
UNDIGESTED = ("manifest_sha256", "created")
MANIFEST_KEY = "manifest.json"
MASK_ARRAY = "tissue_mask"
#: The loss map (format 1.2): float32, one cell per level-0 chunk, NaN on background (an HR
#: chunk's own loss in a hybrid archive, format 1.5).
LOSS_ARRAY = "loss_map"
ICC_ARRAY = "icc_profile"
#: The per-slide adaptation's bytes (format 1.4), uint8, when one was kept.
ADAPTATION_ARRAY = "adaptation"
ASSOCIATED_GROUP = "associated"
#: Full-resolution level-0 chunks of a hybrid archive (format 1.5).
HR_ARRAY = "hr"
#: ``mode`` of an archive: every chunk restored by the generator, or each chunk's cheaper path.
MODES = ("sr", "hybrid")
#: What restores a level-0 chunk from its LR (format 1.7): the generator, or plain bicubic
#: interpolation where the generator restores it worse; the values of :data:`RESTORER_ARRAY`.
GENERATOR, BICUBIC = "generator", "bicubic"
RESTORERS = (GENERATOR, BICUBIC)
#: Each level-0 chunk's restorer (format 1.7): uint8, one cell per chunk, the index in
#: :data:`RESTORERS` (0 on background and full-resolution chunks, which no restorer touches).
RESTORER_ARRAY = "restorer"
#: Largest HR shard side (source pixels): a shard is assembled in memory before it is written.
HR_SHARD_MAX = 4096
#: The hybrid decision, as recorded in the archive (format 1.8; :mod:`wsistore.archive.hybrid_choice`).
HR_RULE = (
    "each chunk takes, of its options, the one of least SSE + lambda * bits, one lambda for the slide: its SR "
    "path (SSE of restore's output by the chunk's restorer; bits = 8 x its LR chunk's stored bytes) and its HR "
    "chunk at each HR setting (SSE of the decoded HR chunk; bits = 8 x its stored bytes; an HR chunk's LR chunk "
    "is not stored, derived from the HR chunk on read); SSE over the chunk's pixels inside the slide and its 3 "
    "channels, in grey levels squared, against the source; bytes with their crc32c; lambda given, or matched to "
    "the SR path's slope at the LR codec's quality, or the smallest whose choice stores at most the target rate's "
    "bytes; an HR setting is first weighed by its probe (the chunk coded at a fast speed, its SSE and bytes "
    "scaled), the settings around the cheapest probe only (all of them for a target rate), and the setting chosen "
    "is coded (once per chunk, which then weighs that coding against its SR path), until every chosen option is a "
    "coding"
)
#: Chunk sides must be multiples of this (LR pixels).
ALIGN = 16
DEFAULT_CHUNK = 256
DEFAULT_SHARD = 2048


@dataclass(frozen=True)
class SourceInfo:
    """What the archive was made from."""

    file_name: str
    bytes: int
    sha256: str
    reader: str
    vendor: str | None
    width: int
    height: int
    level_count: int
    level_dimensions: list[list[int]]
    mpp_x: float | None
    mpp_y: float | None
    mpp_source: str | None
    objective_power: float | None
    properties: dict[str, str]
    icc_profile_sha256: str | None
    icc_profile_bytes: int
    #: The source file's own stored bytes of each associated image, where its reader can
    #: tell (TIFF-based formats); the budget an archived associated image must fit in.
    #: Format 1.1; None in 1.0 archives.
    associated_bytes: dict[str, int] | None = None


@dataclass(frozen=True)
class TissueSummary:
    """How much of the slide is tissue and how much was dropped as background."""

    method: str
    mask_cell: int
    fraction: float
    background_rgb: list[int]
    chunks_total: int
    chunks_written: int
    chunks_background: int
    keep_background: bool

    @property
    def background_dropped(self) -> float:
        return self.chunks_background / self.chunks_total if self.chunks_total else 0.0


@dataclass(frozen=True)
class LevelInfo:
    """One level of the LR pyramid."""

    path: str
    width: int
    height: int
    #: level-0 source pixels per pixel of this level
    downsample: int


@dataclass(frozen=True)
class ArchiveMetadata:
    """The ``wsistore`` block of the group attributes, validated on load."""

    format_version: str
    scale: int
    downsample: dict[str, Any]
    codec: dict[str, Any]
    chunk: int
    shard: int
    fill_value: int
    levels: list[LevelInfo]
    source: SourceInfo
    tissue: TissueSummary
    associated_images: list[str]
    stripped_images: list[str]
    manifest_sha256: str
    created: str
    software: dict[str, str]
    format: str = FORMAT_NAME
    extra: dict[str, Any] = field(default_factory=dict)
    #: the per-slide adaptation (format 1.4): what was tuned and whether it was kept (``kept``;
    #: its bytes are in :data:`ADAPTATION_ARRAY` only then); None when ingest did not adapt
    adaptation: dict[str, Any] | None = None
    #: ``sr`` or ``hybrid`` (format 1.5; earlier archives are ``sr``)
    mode: str = "sr"
    #: a hybrid archive's HR path: codec, lambda, rule, SR path and chunks and bytes per mode
    hybrid: dict[str, Any] | None = None
    #: how each chunk's restorer was chosen (format 1.7, :mod:`wsistore.archive.restorer_choice`):
    #: rule, method, chunks per restorer, gains; None when not chosen (every chunk the generator's)
    restorers: dict[str, Any] | None = None

    @property
    def stored_adaptation(self) -> dict[str, Any] | None:
        """The adaptation's record when its bytes are stored, else None."""
        return self.adaptation if self.adaptation and self.adaptation.get("kept") else None

    @property
    def width(self) -> int:
        """Level-0 source width (the restored image's width)."""
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def mpp(self) -> tuple[float, float] | None:
        if self.source.mpp_x and self.source.mpp_y:
            return self.source.mpp_x, self.source.mpp_y
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ArchiveMetadata:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ArchiveError("not a wsistore archive (no 'wsistore' metadata block)")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ArchiveError(
                f"archive format {version!r} is not readable by this wsistore (reads {READABLE_VERSIONS})"
            )
        if data.get("mode", "sr") not in MODES:
            raise ArchiveError(f"archive mode {data.get('mode')!r} is not one this wsistore reads ({', '.join(MODES)})")
        try:
            return cls(
                **{
                    **data,
                    "levels": [LevelInfo(**lv) for lv in data["levels"]],
                    "source": SourceInfo(**data["source"]),
                    "tissue": TissueSummary(**data["tissue"]),
                }
            )
        except (KeyError, TypeError) as exc:
            raise ArchiveError(f"invalid wsistore metadata: {exc}") from None


#: Properties of a source read from several files (a DICOM slide's instances): one per file,
#: ``wsistore.source-sha256[NAME]`` (its name relative to the source's folder) = its sha256; the
#: source's ``sha256`` is then that of their list (:func:`wsistore.checksums.sha256_files`).
FILE_SHA256_PREFIX = "wsistore.source-sha256["


def file_sha256_properties(file_sha256: dict[str, str]) -> dict[str, str]:
    """The properties that record each file's sha256 of a multi-file source (none for one file)."""
    if len(file_sha256) < 2:
        return {}
    return {f"{FILE_SHA256_PREFIX}{name}]": digest for name, digest in file_sha256.items()}


def recorded_file_sha256(properties: dict[str, str]) -> dict[str, str]:
    """The per-file sha256s :func:`file_sha256_properties` recorded, by file name."""
    return {k[len(FILE_SHA256_PREFIX) : -1]: v for k, v in properties.items() if k.startswith(FILE_SHA256_PREFIX)}


def drops_hr_lr(format_version: str) -> bool:
    """Whether an archive of this format version stores no LR chunk under its HR chunks."""
    return tuple(map(int, format_version.split("."))) >= tuple(map(int, DERIVED_LR_VERSION.split(".")))


def hr_shard_side(chunk: int, shard: int, scale: int) -> int:
    """Side of the HR shards (source pixels): the LR shard's area at full resolution, but at most
    :data:`HR_SHARD_MAX` (and at least one HR chunk, ``scale x chunk``)."""
    hr_chunk = scale * chunk
    return hr_chunk * max(1, min(shard // chunk, HR_SHARD_MAX // hr_chunk))


def level_sizes(lr_width: int, lr_height: int, chunk: int) -> list[tuple[int, int]]:
    """LR pyramid sizes: halve (rounding up) until the level fits in one chunk."""
    sizes = [(lr_width, lr_height)]
    while max(sizes[-1]) > chunk:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return sizes


def choose_shard(lr_width: int, lr_height: int, chunk: int, workers: int, largest: int = DEFAULT_SHARD) -> int:
    """The largest shard (a power-of-two multiple of ``chunk``, at most ``largest``)
    that still gives every worker two shards to write, so small slides use all cores."""
    shard = max(largest, chunk)
    while shard > chunk:
        count = math.ceil(lr_width / shard) * math.ceil(lr_height / shard)
        if count >= 2 * workers:
            break
        shard //= 2
    return max(shard, chunk)


def ome_multiscales(levels: list[LevelInfo], mpp: tuple[float, float] | None, name: str) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attributes for the LR pyramid (axes c, y, x).

    Scale is in micrometres when the source's mpp is known (level-0 mpp times each
    level's downsample), else in source pixels with no unit. The translation puts each
    LR pixel's centre at the centre of the source pixels it summarises.
    """
    unit = {"unit": "micrometer"} if mpp else {}
    px, py = (mpp[0], mpp[1]) if mpp else (1.0, 1.0)
    datasets = []
    for level in levels:
        d = level.downsample
        offset = (d - 1) / 2.0
        datasets.append(
            {
                "path": level.path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, py * d, px * d]},
                    {"type": "translation", "translation": [0.0, py * offset, px * offset]},
                ],
            }
        )
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", **unit},
                    {"name": "x", "type": "space", **unit},
                ],
                "datasets": datasets,
                "type": "wsistore antialiased cubic downsample, then 2x2 mean",
            }
        ],
        "omero": {
            "channels": [
                {"label": label, "color": color, "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                for label, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
            ],
            "rdefs": {"model": "color"},
        },
    }


def read_group_attributes(folder: Path) -> dict[str, Any] | None:
    """The attributes of the Zarr v3 group in a local ``folder``, or None where there is none
    (no folder, no ``zarr.json``, or one that is not a group's JSON)."""
    meta = read_json_file(folder / "zarr.json")
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def is_wsistore_archive(path: Path) -> bool:
    """Whether the local ``path`` is a folder that ingest wrote (its group attributes hold the
    ``wsistore`` block): what ``ingest --overwrite`` may replace."""
    attrs = read_group_attributes(path) if path.is_dir() else None
    return attrs is not None and FORMAT_NAME in attrs


def metadata_digest(block: dict[str, Any]) -> str:
    """sha256 of the ``wsistore`` block as canonical JSON, without :data:`UNDIGESTED` (format
    1.3: recorded in the manifest)."""
    covered = {k: v for k, v in block.items() if k not in UNDIGESTED}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
