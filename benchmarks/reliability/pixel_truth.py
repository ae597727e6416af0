"""Pixel truth campaign: every slide file in ``../shared/data``, the embedded sample and files
built here whose truth is known, each ingested through the CLI and its stored LR compared with
an independent decode of the truth, never through the reader ingest used:

* files built here (:mod:`tests.slides`): the image they were written from (a DICOM whose frames
  are stored column by column with no stated order, one stored row by row, one TILED_SPARSE with
  its frames shuffled, a TIFF whose first page is a thumbnail, a multi-series OME-TIFF);
* the shared DICOM: its frames decoded by Pillow and laid column by column here (so stored,
  its inked margin is one line; row by row it is cut into pieces);
* the other shared TIFF-based slides: read by the other backend than the one ingest recorded
  (OpenSlide against tiffslide), level 0 whole;

then downsampled 4x with the archive's kernel and scored against level 0 as stored (PSNR over
the whole image, with the archive's codec loss in it: a wrong image or a misplaced tile scores
below :data:`WRONG_BELOW_DB`). ``verify --against`` must pass and say which decoders read the
source. Files that cannot be archived faithfully (the Olympus VSI whose image is in an .ets
companion, multichannel fluorescence, a Zeiss CZI) must be refused in one line, exit 2.

    python -m benchmarks.reliability.pixel_truth [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reliability.bad_inputs import BAD_INPUT, DICOM, SLIDES
from tests.slides import (
    real_image,
    write_dicom_frames,
    write_multi_series_ome_tiff,
    write_thumbnail_first_tiff,
)

#: Below this PSNR (dB, stored LR against the truth downsampled) an archive holds another image.
WRONG_BELOW_DB = 30.0
#: Files that must be refused, and the words their one line must hold.
REFUSED = {
    "vsi/vsi-ets-test-jpg2k.vsi": "Olympus VSI keeps its image in companion .ets files",
    "fluor_vectra-polaris_pathml.qptiff": "multichannel image",
}


@dataclass
class Outcome:
    """One file: what ingest did with it and how its stored pixels compare with the truth."""

    name: str
    truth: str
    exit_code: int
    verdict: str  # archived_correctly, refused, wrong
    psnr_db: float | None = None
    decoders: list[str] | None = None
    message: str = ""
    seconds: float = 0.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WSISTORE_ADAPT": "0"}
    return subprocess.run([sys.executable, "-m", "wsistore", *args], capture_output=True, text=True, env=env)


def shared_dicom_truth(path: Path) -> np.ndarray:
    """The shared DICOM's frames, decoded by Pillow (as their JFIF markers say) and laid column
    by column here, cropped to the total pixel matrix."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    down = -(-height // rows)
    out = np.zeros((down * rows, -(-width // cols) * cols, 3), np.uint8)
    for k, data in enumerate(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))):
        col, row = divmod(k, down)
        out[row * rows : (row + 1) * rows, col * cols : (col + 1) * cols] = np.asarray(Image.open(io.BytesIO(data)))
    return out[:height, :width]


def other_backend_truth(path: Path, used: str) -> np.ndarray:
    """Level 0 whole, read by the backend ingest did not use (OpenSlide or tiffslide)."""
    from wsistore.readers import open_slide

    with open_slide(path, "openslide" if used == "tiffslide" else "tiffslide") as slide:
        return slide.read_region((0, 0), 0, slide.dimensions)


def score(archive: Path, truth: np.ndarray) -> float:
    """PSNR (dB) of the archive's level 0 against ``truth`` downsampled with its kernel."""
    from wsistore.archive.reader import Archive
    from wsistore.archive.writer import coding_psnr
    from wsistore.degradation import Downsample

    opened = Archive.open(archive)
    md = opened.metadata
    if truth.shape[:2] != (md.height, md.width):
        return 0.0  # another image altogether
    base = opened.level(0)
    stored = base.read((0, 0, base.width, base.height))
    return coding_psnr(Downsample(md.scale).reduce_region(truth), stored)


def built_cases(folder: Path) -> list[tuple[str, Path, np.ndarray]]:
    """The files built here, each with the image it holds."""
    image = real_image(1000, 744)
    return [
        ("dicom, column by column, no stated order", write_dicom_frames(folder / "column.dcm", image), image),
        ("dicom, row by row, no stated order", write_dicom_frames(folder / "row.dcm", image, order="row"), image),
        (
            "dicom, TILED_SPARSE, frames shuffled",
            write_dicom_frames(folder / "sparse.dcm", image, positions=True, shuffle_seed=7),
            image,
        ),
        ("tiff, thumbnail first", write_thumbnail_first_tiff(folder / "thumbfirst.tif", image), image),
        ("ome-tiff, two series", write_multi_series_ome_tiff(folder / "two.ome.tif", image), image),
    ]


def run_archived(name: str, path: Path, truth: Callable[[str], np.ndarray], folder: Path, how: str) -> Outcome:
    """Ingest ``path``, score its level 0 against ``truth(reader used)`` and verify it."""
    start = time.perf_counter()
    out = folder / f"{abs(hash(name))}.zarr"
    done = _cli("ingest", str(path), str(out), "--quiet", "--workers", "2")
    if done.returncode != 0:
        return Outcome(name, how, done.returncode, "wrong", message=done.stderr.strip()[-300:])
    from wsistore.archive.reader import Archive

    reader = Archive.open(out).metadata.source.reader
    psnr = score(out, truth(reader))
    checked = _cli("verify", str(out), "--against", str(path), "--json", "--quiet")
    report = json.loads(checked.stdout) if checked.stdout.startswith("{") else {}
    decoders = (report.get("against") or {}).get("decoders")
    ok = psnr >= WRONG_BELOW_DB and checked.returncode == 0 and report.get("ok")
    return Outcome(
        name,
        how,
        0,
        "archived_correctly" if ok else "wrong",
        round(psnr, 2),
        decoders,
        message="" if ok else (checked.stdout.strip() or checked.stderr.strip())[-300:],
        seconds=round(time.perf_counter() - start, 1),
    )


def run_refused(name: str, path: Path, words: str, folder: Path) -> Outcome:
    """``path`` must be refused in one line naming why, exit 2, nothing left at the output."""
    start = time.perf_counter()
    out = folder / "refused.zarr"
    done = _cli("ingest", str(path), str(out), "--quiet")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    one_line = len(lines) == 1 and lines[0].startswith("wsistore: error:") and words in lines[0]
    ok = done.returncode == BAD_INPUT and one_line and not out.exists()
    message = lines[0] if lines else done.stdout.strip()
    return Outcome(
        name,
        "refused",
        done.returncode,
        "refused" if ok else "wrong",
        message=message,
        seconds=round(time.perf_counter() - start, 1),
    )


def campaign(quick: bool = False) -> tuple[dict[str, Any], list[Outcome]]:
    """Every case (``quick``: the built files, the shared DICOM and the refusals)."""
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, path, image in built_cases(folder):
            outcomes.append(run_archived(name, path, lambda _used, image=image: image, folder, "the image written"))
        outcomes.append(
            run_archived(DICOM.name, DICOM, lambda _: shared_dicom_truth(DICOM), folder, "frames laid column by column")
        )
        if not quick:
            slides = sorted(p for p in SLIDES.iterdir() if p.is_file() and p.name not in REFUSED and p != DICOM)
            from wsistore.sample import sample_slide_path

            for path in [*slides, sample_slide_path()]:
                outcomes.append(
                    run_archived(
                        path.name, path, lambda used, p=path: other_backend_truth(p, used), folder, "the other backend"
                    )
                )
        for relative, words in REFUSED.items():
            outcomes.append(run_refused(relative, SLIDES / relative, words, folder))
        czi = folder / "zeiss.czi"
        czi.write_bytes(b"ZISRAWFILE" + bytes(1000))
        outcomes.append(run_refused("a Zeiss CZI header", czi, "Zeiss CZI", folder))
    totals = {
        "files": len(outcomes),
        "archived_correctly": sum(o.verdict == "archived_correctly" for o in outcomes),
        "refused": sum(o.verdict == "refused" for o in outcomes),
        "wrong": sum(o.verdict == "wrong" for o in outcomes),
        "worst_psnr_db": min((o.psnr_db for o in outcomes if o.psnr_db is not None), default=None),
    }
    return totals, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="built files, the shared DICOM and the refusals only")
    parser.add_argument("--json", type=Path, help="write the totals and every outcome here")
    args = parser.parse_args(argv)
    totals, outcomes = campaign(args.quick)
    for o in outcomes:
        shown = f"{o.psnr_db:.2f} dB" if o.psnr_db is not None else o.message
        print(f"{o.verdict:>18}  {o.name}  ({o.truth}): {shown}  {o.decoders or ''}")
    print(json.dumps(totals))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "outcomes": [asdict(o) for o in outcomes]}, indent=1) + "\n")
    return 1 if totals["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
