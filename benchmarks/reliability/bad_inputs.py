"""Bad inputs campaign: every input that cannot be archived faithfully fails with one clear
line and the documented exit code, and leaves nothing at the output that looks complete.

Builds each case in a temporary folder from the real files in ``../shared/data`` (real
slides cut short at header, IFD and tile-data offsets; empty, random and text files; a
folder; a DICOM WSI cut short; greyscale, 16-bit and multichannel fluorescence;
tile data corrupt halfway; no read permission; huge declared dimensions; unwritable
outputs), runs ``python -m wsistore ingest CASE OUT`` (and ``info``/``verify`` where they
apply) in a subprocess, and classifies the result:

* ``clear_error``: the expected exit code, exactly one stderr line ``wsistore: error: ...``,
  and nothing at OUT that looks like a complete archive;
* ``archived_correctly``: exit 0 where archiving is acceptable, and ``verify`` passes;
* ``wrong``: anything else (a traceback, a silent success on garbage, a complete-looking
  output after a failure);
* ``skipped``: cannot be staged here (e.g. no read permission when running as root).

    python -m benchmarks.reliability.bad_inputs [--quick] [--json OUT] [--cases]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WSISTORE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SLIDES = SHARED / "slides"
TILES = SHARED / "tiles"
SVS = SLIDES / "skin_cmu1-small-region_aperio-20x.svs"
JP2K_SVS = sorted(SLIDES.glob("kidney_*.svs"))
NDPI = sorted(SLIDES.glob("fluor_hamamatsu-*.ndpi"))
QPTIFF = SLIDES / "fluor_vectra-polaris_pathml.qptiff"
DICOM = SLIDES / "prostate_tcga-xk-aaju-ts1_pathml.dcm"
TILE = TILES / "lung_monuseg_18-5592.png"
#: Exit code of a bad input (wsistore.errors.InputError).
BAD_INPUT = 2
#: Exit code of a damaged or incomplete archive (wsistore.errors.ArchiveError).
BAD_ARCHIVE = 3


@dataclass
class Case:
    """One bad input: how to run it and what is acceptable."""

    name: str
    group: str
    args: list[str]  # the wsistore command line, with {OUT} for the output
    expect: str = "error"  # "error", or "either": a correct archive is acceptable too
    codes: tuple[int, ...] = (BAD_INPUT,)  # the documented exit codes it may give
    skip: str | None = None  # why it cannot be staged here
    check_channels: bool = False  # an archive must record the source's channel layout


@dataclass
class Outcome:
    """What one case did."""

    name: str
    group: str
    command: str
    exit_code: int | None
    stderr_lines: int
    message: str
    complete_output: bool
    verdict: str  # clear_error, archived_correctly, wrong, skipped
    why: str = ""
    seconds: float = 0.0
    extra: list[str] = field(default_factory=list)


# -- building the cases -------------------------------------------------------------------
def truncation_offsets(path: Path) -> list[tuple[str, int]]:
    """At least 10 cut points of a TIFF-based file: inside the header, at and inside the
    first IFD, inside the other IFDs, and at fractions of the tile data."""
    import tifffile

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        ifds = [int(p.offset) for p in tif.pages]
        base: Any = tif.series[0].pages[0]
        tiles = [(int(o), int(n)) for o, n in zip(base.dataoffsets, base.databytecounts, strict=False) if n]
    cuts = [("header", 3), ("header", 7), ("ifd", ifds[0] + 2), ("ifd", ifds[0] + 40)]
    cuts += [("ifd", offset + 10) for offset in ifds[1:3]]
    first, last = min(o for o, _ in tiles), max(o + n for o, n in tiles)
    cuts += [("tile data", first + 100)]
    cuts += [("tile data", int(first + f * (last - first))) for f in (0.25, 0.5, 0.75, 0.95)]
    cuts += [("tile data", last - 50), ("end", size - 1)]
    seen: set[int] = set()
    unique = []
    for where, offset in cuts:
        if 0 < offset < size and offset not in seen:
            seen.add(offset)
            unique.append((where, offset))
    return unique


def write_ome_pyramid(path: Path, image: np.ndarray, levels: int = 3, tile: int = 256) -> Path:
    """A pyramidal OME-TIFF (SubIFDs, JPEG tiles) of ``image``."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=False, ome=True) as tif:
        options: dict[str, Any] = {"tile": (tile, tile), "photometric": "rgb", "compression": "jpeg"}
        tif.write(image, subifds=levels - 1, metadata={"axes": "YXS", "PhysicalSizeX": 0.25}, **options)
        for i in range(1, levels):
            tif.write(image[:: 2**i, :: 2**i], subfiletype=1, **options)
    return path


def _mosaic(size: int = 2048) -> np.ndarray:
    """A ``size`` square image of real tiles (crops of the tile set)."""
    from PIL import Image

    names = sorted(TILES.glob("*.png"))[:8]
    out = np.full((size, size, 3), 240, np.uint8)
    k = 0
    for y in range(0, size, 1000):
        for x in range(0, size, 1000):
            tile = np.asarray(Image.open(names[k % len(names)]).convert("RGB"))
            k += 1
            h, w = min(1000, size - y, tile.shape[0]), min(1000, size - x, tile.shape[1])
            out[y : y + h, x : x + w] = tile[:h, :w]
    return out


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` RGB pixels, with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _tiff_header(width: int, height: int, tile: int | None, data_bytes: int) -> bytes:
    """A classic TIFF declaring ``width x height`` 8-bit RGB pixels, uncompressed, whose one
    strip (``tile`` None) or every tile points at a place with no data."""
    if tile is None:
        offsets, counts, entries = [200], [data_bytes], (273, 279, 278)
        extra = [(278, 4, 1, height)]
    else:
        n = -(-width // tile) * -(-height // tile)
        offsets, counts, entries = [0] * n, [0] * n, (324, 325, 0)
        extra = [(322, 4, 1, tile), (323, 4, 1, tile)]
    tags = [(256, 4, 1, width), (257, 4, 1, height), (259, 3, 1, 1), (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1)]
    tags += extra
    ntags = len(tags) + 3  # + BitsPerSample, offsets, counts
    ifd_size = 2 + 12 * ntags + 4
    bps_at = 8 + ifd_size
    arrays_at = bps_at + 6
    offsets_at, counts_at = arrays_at, arrays_at + 4 * len(offsets)
    tags.append((258, 3, 3, bps_at))
    if len(offsets) == 1:
        tags += [(entries[0], 4, 1, offsets[0]), (entries[1], 4, 1, counts[0])]
    else:
        tags += [(entries[0], 4, len(offsets), offsets_at), (entries[1], 4, len(counts), counts_at)]
    tags.sort()
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags))
    for code, kind, count, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", code, kind, count) + packed
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8)
    if len(offsets) > 1:
        out += np.asarray(offsets, "<u4").tobytes() + np.asarray(counts, "<u4").tobytes()
    return out.ljust(200, b"\0")


def _corrupt_middle_tile(src: Path, dst: Path, keep: int = 64) -> str:
    """Copy ``src`` with the middle level-0 tile's data overwritten by random bytes after its
    first ``keep`` bytes; returns the tile's level-0 region as ``x,y,w,h``."""
    import tifffile

    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        page: Any = tif.series[0].pages[0]
        index = len(page.dataoffsets) // 2
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        across = -(-page.imagewidth // page.tilewidth)
        x, y = (index % across) * page.tilewidth, (index // across) * page.tilelength
        region = f"{x},{y},{page.tilewidth},{page.tilelength}"
    rng = np.random.default_rng(12)
    data[offset + keep : offset + count] = rng.integers(0, 256, count - keep, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return region


def build_cases(work: Path, quick: bool = False) -> list[Case]:
    """Every case, its files written under ``work``."""
    import tifffile
    from PIL import Image

    tile = np.asarray(Image.open(TILE).convert("RGB"))
    inputs = work / "inputs"
    inputs.mkdir()
    cases: list[Case] = []

    def ingest(name: str, group: str, path: Path, **kw: Any) -> Case:
        case = Case(name, group, ["ingest", str(path), "{OUT}", "--quiet", "--workers", "2"], **kw)
        cases.append(case)
        return case

    # truncated real files: SVS (JPEG), SVS (JPEG 2000), NDPI, OME-TIFF
    ome = write_ome_pyramid(inputs / "source.ome.tif", _mosaic())
    sources = [SVS, JP2K_SVS[0], NDPI[0], ome]
    for source in sources[:1] if quick else sources:
        data = source.read_bytes()
        cuts = truncation_offsets(source)
        for where, offset in cuts[::4] if quick else cuts:
            path = inputs / f"cut{offset}-{source.name}"
            path.write_bytes(data[:offset])
            ingest(f"{source.suffix[1:]} {source.stem[:24]} truncated at {offset:,} ({where})", "truncated", path)

    # not images at all
    empty = inputs / "empty.svs"
    empty.write_bytes(b"")
    ingest("zero bytes (.svs)", "not an image", empty)
    noise = inputs / "random.svs"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    ingest("random bytes (.svs)", "not an image", noise)
    tiff_noise = inputs / "random-after-tiff-header.tif"
    tiff_noise.write_bytes(b"II*\x00" + noise.read_bytes()[:100_000])
    ingest("TIFF magic then random bytes", "not an image", tiff_noise)
    text = inputs / "notes.txt"
    text.write_text("this is a text file, not a slide\n" * 100)
    ingest("text file (.txt)", "not an image", text)
    text_svs = inputs / "notes.svs"
    shutil.copy(text, text_svs)
    ingest("text file named .svs", "not an image", text_svs)
    folder = inputs / "a-folder"
    folder.mkdir()
    (folder / "x.svs").write_bytes(b"")
    ingest("a directory", "not an image", folder)
    ingest("a missing file", "not an image", inputs / "missing.svs")
    dicom = DICOM.read_bytes()
    for where, offset in (("header", 1000), ("frame data", len(dicom) // 2)):
        cut = inputs / f"cut{offset}-{DICOM.name}"
        cut.write_bytes(dicom[:offset])
        ingest(f"DICOM truncated at {offset:,} ({where})", "truncated", cut)
    broken_png = inputs / "broken.png"
    broken_png.write_bytes(TILE.read_bytes()[:5000])
    ingest("PNG truncated at 5,000 bytes", "not an image", broken_png)

    # sample layouts that are not 8-bit RGB brightfield
    for ndpi in [] if quick else NDPI:  # the slowest cases: they archive (4 MP each)
        ingest(
            f"fluorescence NDPI {ndpi.stem} (8-bit RGB JPEG)", "channels", ndpi, expect="either", check_channels=True
        )
    ingest("multichannel fluorescence QPTIFF (3 x 8-bit planes)", "channels", QPTIFF)
    grey = inputs / "grey.tif"
    tifffile.imwrite(grey, np.asarray(Image.fromarray(_mosaic(1200)).convert("L")), tile=(256, 256), compression="zlib")
    ingest("greyscale tiled TIFF (8-bit)", "channels", grey, expect="either", check_channels=True)
    sixteen = inputs / "rgb16.tif"
    tifffile.imwrite(sixteen, tile.astype(np.uint16) * 257, tile=(256, 256), photometric="rgb", compression="zlib")
    ingest("16-bit RGB tiled TIFF", "channels", sixteen)
    planes = inputs / "five-channel.ome.tif"
    stack = np.stack([tile[:, :, i % 3] for i in range(5)])
    tifffile.imwrite(
        planes, stack, tile=(256, 256), compression="zlib", photometric="minisblack", metadata={"axes": "CYX"}
    )
    ingest("multichannel OME-TIFF (5 channels)", "channels", planes)
    png16 = inputs / "grey16.png"
    Image.fromarray(tile[:, :, 0].astype(np.uint16) * 257).save(png16)
    ingest("16-bit greyscale PNG", "channels", png16)

    # valid TIFF, tile data corrupt halfway
    clean = inputs / "clean-zlib.tif"
    tifffile.imwrite(clean, _mosaic(), tile=(256, 256), photometric="rgb", compression="zlib")
    region = _corrupt_middle_tile(clean, inputs / "corrupt-zlib.tif")
    ingest(f"zlib TIFF, middle tile ({region}) random", "corrupt", inputs / "corrupt-zlib.tif")
    region = _corrupt_middle_tile(SVS, inputs / "corrupt-jpeg.svs")
    ingest(f"SVS, middle JPEG tile ({region}) random", "corrupt", inputs / "corrupt-jpeg.svs")
    if not quick:
        region = _corrupt_middle_tile(JP2K_SVS[0], inputs / "corrupt-jp2k.svs")
        ingest(f"JP2K SVS, middle tile ({region}) random", "corrupt", inputs / "corrupt-jp2k.svs")

    # no read permission
    locked = inputs / "locked.svs"
    shutil.copy(SVS, locked)
    locked.chmod(0)
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    ingest(
        "no read permission (mode 000)",
        "permission",
        locked,
        skip="running as root: mode 000 does not block reads" if root else None,
    )

    # huge declared dimensions
    huge_strip = inputs / "huge-strip.tif"
    huge_strip.write_bytes(_tiff_header(1_000_000, 1_000_000, None, 2**32 - 1))
    ingest("TIFF declaring 10^6 x 10^6 pixels, one strip, no data", "huge", huge_strip)
    huge_tiled = inputs / "huge-tiled.tif"
    huge_tiled.write_bytes(_tiff_header(100_000, 100_000, 256, 0))
    ingest("tiled TIFF declaring 10^5 x 10^5 pixels, no tile data", "huge", huge_tiled)
    huge_png = inputs / "huge.png"
    huge_png.write_bytes(_png_header(1_000_000, 1_000_000))
    ingest("PNG header declaring 10^6 x 10^6 pixels", "huge", huge_png)

    # outputs that cannot be written
    cases.append(
        Case(
            "output in a missing directory",
            "output",
            ["ingest", str(SVS), str(work / "no" / "such" / "out.zarr"), "--quiet"],
        )
    )
    readonly = work / "readonly"
    readonly.mkdir()
    if root:
        target = "/sys/wsistore-bad-inputs.zarr"  # sysfs refuses new entries, even to root
    else:
        readonly.chmod(0o555)
        target = str(readonly / "out.zarr")
    # exit 2 when the check before writing sees it, 1 (a failed write) when only mkdir does (root)
    cases.append(
        Case("output in a read-only directory", "output", ["ingest", str(SVS), target, "--quiet"], codes=(2, 1))
    )
    output_file = work / "a-file"
    output_file.write_text("x")
    cases.append(
        Case("output below a regular file", "output", ["ingest", str(SVS), str(output_file / "out.zarr"), "--quiet"])
    )

    # info and verify of things that are not archives
    cases.append(Case("info of a zero-byte file", "info/verify", ["info", str(empty)], codes=(BAD_ARCHIVE,)))
    cases.append(Case("info of a slide file", "info/verify", ["info", str(SVS)], codes=(BAD_ARCHIVE,)))
    cases.append(Case("verify of a plain folder", "info/verify", ["verify", str(folder)], codes=(BAD_ARCHIVE,)))
    cases.append(Case("verify of random bytes", "info/verify", ["verify", str(noise)], codes=(BAD_ARCHIVE,)))
    return cases


# -- running them -------------------------------------------------------------------------
def looks_complete(out: Path) -> bool:
    """Whether ``out`` is a folder (not ``*.partial``) holding a ``zarr.json`` with wsistore
    attributes: what a user would take for a finished archive."""
    if out.name.endswith(".partial") or not (out / "zarr.json").is_file():
        return False
    try:
        meta = json.loads((out / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return "wsistore" in meta.get("attributes", {})


def _wsistore(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    env = dict(os.environ)  # what a user sees: Python's default warning filters
    env.pop("WSISTORE_DEBUG", None)
    env.pop("PYTHONWARNINGS", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "wsistore", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout:.0f} s", time.perf_counter() - start
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def run_case(case: Case, out: Path, timeout: float = 300) -> Outcome:
    """Run one case with ``{OUT}`` = ``out`` and classify what it did."""
    args = [str(out) if a == "{OUT}" else a for a in case.args]
    command = "wsistore " + " ".join(args)
    if case.skip:
        return Outcome(case.name, case.group, command, None, 0, "", False, "skipped", case.skip)
    code, stdout, stderr, seconds = _wsistore(args, timeout)
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    outputs = [Path(a) for a in args[2:3]] if args[0] == "ingest" else []
    complete = any(looks_complete(p) for p in outputs)
    result = Outcome(case.name, case.group, command, code, len(lines), message, complete, "wrong", seconds=seconds)
    if code == 0 and case.expect == "either":
        vcode, vout, verr, _ = _wsistore(["verify", str(out)], timeout)
        result.extra.append(f"verify: exit {vcode}: {(vout + verr).strip().splitlines()[-1:]}")
        layout = _channels_recorded(out) if case.check_channels else "n/a"
        if vcode != 0:
            result.why = "archived, but verify fails"
        elif complete is False:
            result.why = "exit 0 but no complete archive"
        elif not layout:
            result.why = "archived without its channel layout recorded"
        else:
            result.verdict, result.message = "archived_correctly", f"archived; verify OK; channels: {layout}"
        return result
    if code == 0:
        result.why = "exit 0 on an input that cannot be archived faithfully"
    elif code not in case.codes:
        result.why = f"exit {code}, expected {' or '.join(map(str, case.codes))}"
    elif len(lines) != 1 or not message.startswith("wsistore: error: "):
        result.why = f"{len(lines)} stderr lines, expected one 'wsistore: error: ...' line"
    elif complete:
        result.why = "a complete-looking archive was left after the error"
    else:
        result.verdict = "clear_error"
    return result


def _channels_recorded(out: Path) -> str:
    meta = json.loads((out / "zarr.json").read_text())["attributes"]["wsistore"]
    return str(meta.get("source", {}).get("properties", {}).get("wsistore.source-channels", ""))


def campaign(quick: bool = False, only: str = "") -> tuple[dict[str, int], list[Outcome]]:
    """Build and run every case (with ``only``, those whose name contains it); the totals
    and each case's outcome."""
    with tempfile.TemporaryDirectory(prefix="wsistore-bad-inputs-") as tmp:
        work = Path(tmp)
        cases = [c for c in _cases(work, quick) if only in c.name]
        outcomes = [run_case(case, work / "out" / f"{i:03d}.zarr") for i, case in enumerate(cases)]
        for path in (work / "inputs").glob("*"):
            path.chmod(0o644)
        (work / "readonly").chmod(0o755)
    return totals(outcomes), outcomes


def _cases(work: Path, quick: bool) -> Iterator[Case]:
    (work / "out").mkdir(parents=True, exist_ok=True)
    yield from build_cases(work, quick)


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    """``inputs`` (cases run), ``clear_errors``, ``archived_correctly``, ``wrong``, ``skipped``."""
    count: Callable[[str], int] = lambda verdict: sum(o.verdict == verdict for o in outcomes)  # noqa: E731
    return {
        "inputs": sum(o.verdict != "skipped" for o in outcomes),
        "clear_errors": count("clear_error"),
        "archived_correctly": count("archived_correctly"),
        "wrong": count("wrong"),
        "skipped": count("skipped"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset (one truncated slide, fewer offsets)")
    parser.add_argument("--json", type=Path, help="also write every case's outcome here")
    parser.add_argument("--cases", action="store_true", help="print each case's verdict and message to stderr")
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    summary, outcomes = campaign(args.quick, args.only)
    if args.cases:
        for o in outcomes:
            print(
                f"{o.verdict:18} exit {o.exit_code} {o.seconds:5.1f}s  {o.name}: {o.message} {o.why}", file=sys.stderr
            )
    if args.json:
        args.json.write_text(json.dumps({"totals": summary, "cases": [asdict(o) for o in outcomes]}, indent=2))
    print(json.dumps(summary))
    return 0 if summary["wrong"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
