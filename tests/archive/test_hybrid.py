"""Hybrid archives (format 1.6 on, ``ingest --mode hybrid``): per level-0 chunk the LR path or a
full-resolution (HR) chunk, whichever the rate-distortion rule says costs less (one HR setting
here), the SR path's
distortion being what restore really outputs, an HR chunk's LR chunk not stored but derived from
it; restored, read on demand, verified and described with both kinds of chunk; ``--mode sr``,
format 1.5 hybrids (LR kept) and older archives as before."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import tifffile
import zarr

import wsistore
from tests.cli.test_cli import assert_one_line_error, run
from tests.data import SLIDE
from tests.s3 import S3
from wsistore.archive import hybrid_ingest, writer
from wsistore.archive.format import ADAPTATION_ARRAY, HR_ARRAY, MANIFEST_KEY, metadata_digest
from wsistore.archive.hybrid_choice import PROBE_BYTES_RATIO, PROBE_SPEED, PROBE_SSE_RATIO, SR, Option, best, sse
from wsistore.archive.hybrid_ingest import CODED_PREFIX, HybridPasses
from wsistore.archive.manifest import ArrayRecord, chunk_modes
from wsistore.archive.reader import Archive
from wsistore.archive.verify import verify
from wsistore.archive.writer import DEFAULT_HR_CODECS, DEFAULT_HR_LAMBDA, UNUSED_ADAPTATION, IngestOptions, ingest
from wsistore.cli.info import _settings_used
from wsistore.codecs import parse_codec
from wsistore.degradation import Downsample
from wsistore.errors import ArchiveError, InputError
from wsistore.models.weights import LoadedGenerator
from wsistore.readers import open_slide
from wsistore.restoration.hybrid import SrPath
from wsistore.restoration.pipeline import RestoreOptions, restore

#: On the sample slide this lambda makes 6 of the 9 chunks HR (AVIF 40, 4:4:4, speed 6).
LAMBDA = 600.0
#: Shards of 2 x 2 LR chunks, so HR shards of 2 x 2 HR chunks: 4 HR shards over the 3 x 3 grid;
#: hybrid with one HR setting (the two-option rule: tests/archive/test_equal_slopes.py has several).
SR_OPTIONS = IngestOptions(chunk=256, shard=512, workers=2, progress=False, upscaler=SrPath())
HR_CODEC = parse_codec("avif:level=40,speed=6")
HYBRID_OPTIONS = replace(SR_OPTIONS, mode="hybrid", hr_lambda=LAMBDA, hr_codecs=(HR_CODEC,))
#: Restores of these tests: lossless, on the CPU, with the archive's default generator.
RESTORE = RestoreOptions(device="cpu", lossless=True, progress=False, workers=2, tile=256)


@pytest.fixture(scope="module")
def pair(hybrid_pair: tuple[Path, Path]) -> tuple[Path, Path]:
    """The sample slide ingested in ``sr`` and in ``hybrid`` mode, same LR settings (tests/conftest.py)."""
    return hybrid_pair


@pytest.fixture(scope="module")
def restored(tmp_path_factory: pytest.TempPathFactory, pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Full lossless restores of both archives."""
    folder = tmp_path_factory.mktemp("restored")
    restore(pair[0], folder / "sr.tif", RESTORE)
    restore(pair[1], folder / "hybrid.tif", RESTORE)
    return tifffile.imread(folder / "sr.tif"), tifffile.imread(folder / "hybrid.tif")


def _hr_box(archive: Archive, r: int, q: int) -> tuple[int, int, int, int]:
    side = archive.metadata.scale * archive.metadata.chunk
    md = archive.metadata
    return q * side, r * side, min((q + 1) * side, md.width), min((r + 1) * side, md.height)


def _tissue(archive: Archive) -> list[tuple[int, int]]:
    base = archive.level(0)
    rows, cols = -(-base.height // base.chunk), -(-base.width // base.chunk)
    return [(r, q) for r in range(rows) for q in range(cols) if base.chunk_state(r, q) != "background"]


def test_the_rule() -> None:
    """With one HR setting: HR iff SSE_sr - SSE_hr > lambda x (bits_hr - bits_lr)."""

    def hr(sse_sr: float, sse_hr: float, bytes_hr: int, bytes_lr: int, lam: float) -> bool:
        return best([Option(SR, sse_sr, bytes_lr), Option("hr", sse_hr, bytes_hr)], lam).path == "hr"

    assert hr(1000, 10, bytes_hr=10, bytes_lr=0, lam=990 / 80 - 0.1)
    assert not hr(1000, 10, bytes_hr=10, bytes_lr=0, lam=990 / 80 + 0.1)  # more than lambda per bit
    assert hr(1000, 10, bytes_hr=14, bytes_lr=4, lam=990 / 80 - 0.1)  # the LR chunk's bits saved
    assert not hr(10, 20, bytes_hr=1, bytes_lr=1, lam=0)  # never when HR is further away
    black, white = np.zeros((1024, 1024, 3), np.uint8), np.full((1024, 1024, 3), 255, np.uint8)
    assert sse(black, white) == sse(white, black) == 3 * 1024 * 1024 * 255**2  # no overflow


def test_hybrid_metadata_and_the_lr_of_the_sr_chunks_as_in_sr_mode(pair: tuple[Path, Path]) -> None:
    sr, hybrid = Archive.open(pair[0]), Archive.open(pair[1])
    md = hybrid.metadata
    assert md.format_version == "1.8" and md.mode == "hybrid" and sr.metadata.mode == "sr"
    # each SR chunk's restorer is chosen in the same pass (the generator wins both on H&E)
    assert md.restorers is not None and md.restorers["method"] == "per chunk: every SR chunk measured (hybrid)"
    assert md.restorers["chunks"] == {"generator": 2, "bicubic": 0} and md.restorers["measured"] == 2
    assert sr.hr is None and sr.metadata.hybrid is None and HR_ARRAY not in sr.manifest.arrays
    assert md.hybrid is not None and md.hybrid["lambda"] == LAMBDA and "least SSE + lambda * bits" in md.hybrid["rule"]
    assert md.hybrid["hr_codec"] == HR_CODEC.to_dict() and md.hybrid["hr_codecs"] == [HR_CODEC.to_dict()]
    assert md.hybrid["hr_chunk"] == 1024 and md.hybrid["hr_shard"] == 2048
    assert md.hybrid["sr"]["generator"]["name"] == "compact-l1-gpu" and md.hybrid["sr"]["device"] == "cpu"
    modes = md.hybrid["modes"]
    assert modes["sr"]["chunks"] == 2 and modes["hr"]["chunks"] == 7
    assert modes["hr"]["bytes"] == sum(size for size, _ in hybrid.manifest.arrays[HR_ARRAY].chunks.values())
    assert modes["hr"]["lr_bytes"] == 0 and md.tissue.chunks_written == 9
    # the coarse levels are the sr archive's, byte for byte; level 0 its chunks less the HR chunks'
    for level in md.levels[1:]:
        assert hybrid.manifest.arrays[level.path].shards == sr.manifest.arrays[level.path].shards
    base, sr_base = hybrid.manifest.arrays["0"], sr.manifest.arrays["0"]
    hr_ids = set(hybrid.manifest.arrays[HR_ARRAY].chunks)
    assert base.chunks == {k: v for k, v in sr_base.chunks.items() if k not in hr_ids} and len(base.chunks) == 2
    assert base.coding_psnr == {k: v for k, v in sr_base.coding_psnr.items() if k not in hr_ids}
    for r, q in _tissue(hybrid):
        lr_box = (256 * q, 256 * r, min(256 * (q + 1), md.levels[0].width), min(256 * (r + 1), md.levels[0].height))
        if hybrid.is_hr(r, q):  # derived: the decoded HR chunk downsampled
            assert hybrid.level(0).chunk_state(r, q) == "derived"
            expected = Downsample(4).reduce_region(hybrid.hr.read(_hr_box(hybrid, r, q)))  # type: ignore[union-attr]
        else:
            expected = sr.read_lr(0, lr_box)
        assert np.array_equal(hybrid.read_lr(0, lr_box), expected), (r, q)
    hr = zarr.open_array(pair[1] / HR_ARRAY, mode="r")  # stock zarr reads it, shards packed by ingest
    assert hr.shape == (3, md.height, md.width) and hr.chunks == (3, 1024, 1024)
    for r, q in _tissue(hybrid):
        if hybrid.is_hr(r, q):
            x0, y0, x1, y1 = box = _hr_box(hybrid, r, q)
            assert np.array_equal(hr[:, y0:y1, x0:x1].transpose(1, 2, 0), hybrid.hr.read(box)), (r, q)  # type: ignore[union-attr]


def test_each_chunk_takes_the_path_the_rule_chooses(pair: tuple[Path, Path], restored: tuple[np.ndarray, ...]) -> None:
    """Recomputed from scratch: SR = the sr archive's full restore, HR = the source coded by the
    HR codec (an edge chunk at its extent inside the slide: format 1.8), weighed first by its
    probe, the source read afresh, the LR chunk's bytes (the sr archive's) saved."""
    archive, sr = Archive.open(pair[1]), Archive.open(pair[0])
    codec = HR_CODEC
    sr_restore = restored[0]
    with open_slide(SLIDE) as slide:
        chosen = []
        for r, q in _tissue(archive):
            x0, y0, x1, y1 = _hr_box(archive, r, q)
            source = slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
            encoded = codec.encode_image(np.ascontiguousarray(source))
            decoded = codec.decode_image(encoded)
            assert decoded.shape == source.shape
            sse_sr = sse(sr_restore[y0:y1, x0:x1], source)
            lr_bytes = sr.manifest.arrays["0"].chunks[f"0.{r}.{q}"][0]
            # first weighed by its probe (the fast speed's coding, scaled), coded if that wins ...
            probe = replace(codec, speed=PROBE_SPEED).encode_image(np.ascontiguousarray(source))
            probe_sse = sse(replace(codec, speed=PROBE_SPEED).decode_image(probe), source) * PROBE_SSE_RATIO
            probe_bits = 8 * round((len(probe) + 4) * PROBE_BYTES_RATIO)
            coded = sse_sr - probe_sse > LAMBDA * (probe_bits - 8 * lr_bytes)
            # ... and then the rule, as stated, on the chunk as coded
            if coded and sse_sr - sse(decoded, source) > LAMBDA * 8 * (len(encoded) + 4 - lr_bytes):
                chosen.append((r, q))
                stored = archive.manifest.arrays[HR_ARRAY].chunks[f"0.{r}.{q}"]  # the bytes it decided on
                assert stored == [len(encoded) + 4, google_crc32c.value(encoded)], (r, q)
    assert 0 < len(chosen) < len(_tissue(archive))
    assert [rq for rq in _tissue(archive) if archive.is_hr(*rq)] == chosen
    md = archive.metadata
    measured = SrPath().open(sr.level(0), (md.width, md.height), archive.codec, None)
    try:  # what ingest measured (every LR chunk as first stored) is what restore outputs of that LR
        for r, q in _tissue(archive):
            x0, y0, x1, y1 = box = _hr_box(archive, r, q)
            assert np.array_equal(measured.read(box), sr_restore[y0:y1, x0:x1]), (r, q)
    finally:
        measured.close()


def test_restore_pastes_the_hr_chunks_over_the_sr_output(
    pair: tuple[Path, Path], restored: tuple[np.ndarray, np.ndarray]
) -> None:
    """HR chunks as decoded; SR chunks the generator's output over level 0 as read (the derived LR
    of the HR chunks as their neighbours' context), within a grey level or two of the sr archive's."""
    archive = Archive.open(pair[1])
    sr_restore, hybrid_restore = restored
    assert archive.hr is not None
    md = archive.metadata
    sr_path = SrPath().open(archive.level(0), (md.width, md.height), archive.codec, None)
    try:
        for r, q in _tissue(archive):
            x0, y0, x1, y1 = box = _hr_box(archive, r, q)
            expected = archive.hr.read(box) if archive.is_hr(r, q) else sr_path.read(box)
            assert np.array_equal(hybrid_restore[y0:y1, x0:x1], expected), (r, q)
            if not archive.is_hr(r, q):
                change = hybrid_restore[y0:y1, x0:x1].astype(int) - sr_restore[y0:y1, x0:x1]
                assert np.abs(change).mean() < 0.5, (r, q)
    finally:
        sr_path.close()
    assert not np.array_equal(hybrid_restore, sr_restore)


def test_regions_on_demand_and_every_output_equal_the_full_restore(
    tmp_path: Path, pair: tuple[Path, Path], restored: tuple[np.ndarray, np.ndarray]
) -> None:
    full = restored[1]
    x, y, w, h = region = (700, 900, 1100, 1300)  # across chunk borders, HR and SR chunks
    restore(pair[1], tmp_path / "r.tif", replace(RESTORE, region=region, tile=512, workers=1))
    assert np.array_equal(tifffile.imread(tmp_path / "r.tif"), full[y : y + h, x : x + w])
    restore(pair[1], tmp_path / "r.zarr", replace(RESTORE, region=region, format="zarr", tile=128, lossless=False))
    group = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert np.array_equal(np.moveaxis(group["0"][:], 0, 2), full[y : y + h, x : x + w])
    assert group.attrs["wsistore_restore"]["mode"] == "hybrid"
    restore(pair[1], tmp_path / "r.dcm", replace(RESTORE, region=region, format="dicom", codec="jpeg2000"))
    from wsidicom import WsiDicom

    with WsiDicom.open(tmp_path / "r.dcm") as slide:
        dicom = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
    assert np.array_equal(dicom, full[y : y + h, x : x + w])
    with wsistore.open(pair[1], device="cpu") as slide:
        pixels = np.asarray(slide.read_region((x, y), 0, (w, h)).convert("RGB"))
        assert np.array_equal(pixels, full[y : y + h, x : x + w])
        corner = np.asarray(slide.read_region((2000, 2800), 0, (220, 167)).convert("RGB"))
        assert np.array_equal(corner, full[2800:, 2000:])


def test_verify_checks_the_hr_chunks_against_the_source(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    report = verify(pair[1], against=SLIDE, progress=False)
    assert report.ok, report.problems
    assert report.chunks == verify(pair[0], progress=False).chunks  # 6 HR chunks decoded instead of their LR
    assert report.against is not None and report.against["hr_chunks_compared"] == 7
    copy = tmp_path / "copy.zarr"
    shutil.copytree(pair[1], copy)
    archive = Archive.open(copy)
    record = archive.manifest.arrays[HR_ARRAY]
    key = sorted(record.shards)[0]
    data = bytearray((copy / HR_ARRAY / key).read_bytes())
    data[100] ^= 0xFF  # inside the first HR chunk of that shard
    (copy / HR_ARRAY / key).write_bytes(bytes(data))
    problems = verify(copy, progress=False).problems
    assert any(f"shard {HR_ARRAY}/{key} has changed" in p for p in problems), problems
    assert any(p.startswith(f"chunk {HR_ARRAY} row") for p in problems), problems
    with pytest.raises(ArchiveError, match=f"chunk {HR_ARRAY} row"), wsistore.open(copy, device="cpu") as slide:
        slide.read_region((0, 0), 0, (2220, 2967))


def test_the_loss_map_holds_each_chunks_stored_path_loss(pair: tuple[Path, Path]) -> None:
    """An HR chunk's cell is its own loss (the source minus the decoded HR chunk, cropped to the
    slide); an SR chunk's is the bicubic baseline's, as in the ``sr`` archive; verify --against
    recomputes both."""
    sr, hybrid = Archive.open(pair[0]), Archive.open(pair[1])
    loss, sr_loss = hybrid.loss_map(), sr.loss_map()
    assert loss is not None and sr_loss is not None and hybrid.hr is not None
    assert np.array_equal(np.isnan(loss), np.isnan(sr_loss))
    hr = [rq for rq in _tissue(hybrid) if hybrid.is_hr(*rq)]
    assert len(hr) == 7
    with open_slide(SLIDE) as slide:
        for r, q in _tissue(hybrid):
            if (r, q) not in hr:
                assert loss[r, q] == sr_loss[r, q], (r, q)
                continue
            x0, y0, x1, y1 = box = _hr_box(hybrid, r, q)
            source = slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)).astype(np.float64)
            expected = np.sqrt(np.mean((source - hybrid.hr.read(box)) ** 2))
            assert float(loss[r, q]) == pytest.approx(expected, abs=1e-4), (r, q)
            assert loss[r, q] < sr_loss[r, q], (r, q)  # the HR chunk is closer than bicubic of its LR
    # verify --against recomputes an HR chunk's cell as its own loss: the bicubic value is wrong there
    from wsistore.archive.verify import VerifyReport, _compare_source

    r, q = hr[0]
    swapped = loss.copy()
    swapped[r, q] = sr_loss[r, q]
    report = VerifyReport(archive=str(pair[1]))
    _compare_source(hybrid, SLIDE, "auto", report, 2, False, swapped)
    assert report.problems == [
        f"loss map row {r} col {q} is {float(sr_loss[r, q]):.3f}, the source gives {float(loss[r, q]):.3f}"
    ]


def test_verify_against_finds_an_hr_chunk_that_is_not_the_source(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """An HR chunk swapped for another whole, checksummed one (manifest and metadata rewritten to
    match, as a forger would) passes the checksums but not the comparison with the source."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(pair[1], copy)
    archive = Archive.open(copy)
    hr = [rq for rq in _tissue(archive) if archive.is_hr(*rq)]
    (r0, q0), (r1, q1) = hr[0], hr[1]
    a = zarr.open_array(copy / HR_ARRAY, mode="r+")
    side = 1024
    first = a[:, r0 * side : (r0 + 1) * side, q0 * side : (q0 + 1) * side]
    second = a[:, r1 * side : (r1 + 1) * side, q1 * side : (q1 + 1) * side]
    if first.shape == second.shape:
        a[:, r0 * side : (r0 + 1) * side, q0 * side : (q0 + 1) * side] = second
    else:  # an edge chunk: paint it grey instead
        a[:, r0 * side : (r0 + 1) * side, q0 * side : (q0 + 1) * side] = 128
    _reseal(copy)
    report = verify(copy, against=SLIDE, progress=False)
    assert any(f"chunk {HR_ARRAY} row {r0} col {q0} does not match the source" in p for p in report.problems), (
        report.problems
    )


def _reseal(path: Path) -> None:
    """Rewrite the manifest's checksums and the metadata's hashes to the archive's current bytes."""
    from wsistore.archive.manifest import Manifest, describe_shard

    manifest = Manifest.from_bytes((path / MANIFEST_KEY).read_bytes())
    for name, record in manifest.arrays.items():
        for key in list(record.shards):
            coords = tuple(int(p) for p in key.split("/")[1:])
            record.merge(describe_shard(name, record, coords, (path / name / key).read_bytes()))
    group = json.loads((path / "zarr.json").read_text())
    block = group["attributes"]["wsistore"]
    manifest.metadata_sha256 = metadata_digest(block)
    data = manifest.to_bytes()
    (path / MANIFEST_KEY).write_bytes(data)
    block["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "zarr.json").write_text(json.dumps(group))


def test_info_shows_chunks_and_bytes_per_mode(pair: tuple[Path, Path]) -> None:
    shown = run("info", str(pair[1]), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["mode"] == "hybrid" and info["format_version"] == "1.8"
    modes = info["chunk_modes"]
    assert (modes["sr"]["chunks"], modes["hr"]["chunks"]) == (2, 7)
    assert modes["sr"]["share"] == pytest.approx(2 / 9) and modes["hr"]["share"] == pytest.approx(7 / 9)
    assert modes["hr"]["bytes"] > 0 and modes["hr"]["lr_bytes"] == 0 and modes["sr"]["bytes"] > 0
    assert info["image_bytes"] == info["pyramid_bytes"] + info["hr_bytes"] and info["hr_bytes"] > modes["hr"]["bytes"]
    text = run("info", str(pair[1])).stdout
    assert "hybrid: 2 chunks SR (22.2%" in text and "7 full resolution (77.8%" in text and "lambda 600" in text
    assert "HR codings after probes at speed 9" in text and "; HR avif level 40: 7 chunks (speed=6, " in text
    # the chunks per setting: one codec's ladder by its quality, other mixes in full
    ladder = {"sr": 2, "avif(level=4, speed=6)": 1, "avif(level=38, speed=6)": 5, "avif(level=40, speed=6)": 0}
    assert _settings_used(ladder) == "avif level 4: 1, 38: 5 chunks (speed=6)"
    mixed = {"sr": 2, "jpeg(level=50)": 2, "avif(level=4, speed=6)": 1}
    assert _settings_used(mixed) == "2 at jpeg(level=50), 1 at avif(level=4, speed=6)"
    assert "; with the full-resolution chunks " in text
    assert "bicubic of the archive (minus the HR chunk where stored at full resolution) over 9" in text
    sr = json.loads(run("info", str(pair[0]), "--json").stdout)
    assert sr["mode"] == "sr" and sr["chunk_modes"]["hr"]["chunks"] == 0 and sr["hybrid"] is None
    sr_text = run("info", str(pair[0])).stdout
    assert "sr (all 9 tissue chunks restored from the LR)" in sr_text and "minus the HR chunk" not in sr_text


def test_same_bytes_whatever_the_workers_and_across_resume(
    tmp_path: Path, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "again.zarr"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._Ingest, "_write_associated", interrupted)  # after the HR shards are journalled
    with pytest.raises(KeyboardInterrupt):
        ingest(SLIDE, out, replace(HYBRID_OPTIONS, workers=1))
    monkeypatch.undo()
    with pytest.raises(InputError, match="hybrid"):  # another lambda is another archive
        ingest(SLIDE, out, replace(HYBRID_OPTIONS, hr_lambda=1.0, resume=True))

    def not_again(*args: object) -> None:
        raise AssertionError("the resumed ingest decided a journalled HR shard again")

    monkeypatch.setattr(HybridPasses, "_write_shard", not_again)
    monkeypatch.setattr(HybridPasses, "_code", not_again)
    ingest(SLIDE, out, replace(HYBRID_OPTIONS, workers=1, resume=True))
    assert (out / MANIFEST_KEY).read_bytes() == (pair[1] / MANIFEST_KEY).read_bytes()


def test_an_ingest_cut_short_while_coding_resumes_without_coding_again(
    tmp_path: Path, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut short after two chunks are coded at their chosen setting: the resumed ingest codes only
    the others (the two kept in the work folder and journalled) and writes the same bytes."""
    out = tmp_path / "coding.zarr"
    original, calls = hybrid_ingest.code_hr_chunk, []

    def counted(source: np.ndarray, codec: object) -> object:
        if len(calls) == 2 and not resumed:
            raise KeyboardInterrupt
        calls.append(1)
        return original(source, codec)  # type: ignore[arg-type]

    resumed = False
    monkeypatch.setattr(hybrid_ingest, "code_hr_chunk", counted)
    with pytest.raises(KeyboardInterrupt):
        ingest(SLIDE, out, replace(HYBRID_OPTIONS, workers=1))
    resumed = True
    ingest(SLIDE, out, replace(HYBRID_OPTIONS, workers=1, resume=True))
    assert (out / MANIFEST_KEY).read_bytes() == (pair[1] / MANIFEST_KEY).read_bytes()
    hybrid = Archive.open(out).metadata.hybrid
    assert hybrid is not None and len(calls) == hybrid["hr_codings"] > 2


def test_an_ingest_cut_short_while_dropping_lr_chunks_resumes_to_the_same_bytes(
    tmp_path: Path, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut short once the first level-0 shard has lost its HR chunks' LR, before that is
    journalled: the resumed ingest writes that shard again and drops them again."""
    out = tmp_path / "cut.zarr"
    drop = HybridPasses._drop_hr_lr

    def cut_short(self: HybridPasses) -> None:
        def journal(rec: object) -> None:
            raise KeyboardInterrupt

        self.ingest.journal_shard = journal  # type: ignore[method-assign]
        drop(self)

    monkeypatch.setattr(HybridPasses, "_drop_hr_lr", cut_short)
    with pytest.raises(KeyboardInterrupt):
        ingest(SLIDE, out, HYBRID_OPTIONS)
    monkeypatch.undo()
    ingest(SLIDE, out, replace(HYBRID_OPTIONS, resume=True))
    assert (out / MANIFEST_KEY).read_bytes() == (pair[1] / MANIFEST_KEY).read_bytes()


def test_a_format_1_5_hybrid_with_its_lr_chunks_still_reads(
    tmp_path: Path, pair: tuple[Path, Path], restored: tuple[np.ndarray, np.ndarray]
) -> None:
    """Format 1.5 stored the LR chunk under an HR chunk too: read as stored (nothing derived), so
    its SR chunks restore as the sr archive's; the same archive labelled 1.6 is refused."""
    copy = tmp_path / "old.zarr"
    shutil.copytree(pair[1], copy)
    shutil.rmtree(copy / "0")
    shutil.copytree(pair[0] / "0", copy / "0")
    manifest = json.loads((copy / MANIFEST_KEY).read_text())
    manifest["arrays"]["0"] = json.loads((pair[0] / MANIFEST_KEY).read_text())["arrays"]["0"]
    group = json.loads((copy / "zarr.json").read_text())
    block = group["attributes"]["wsistore"]
    base, hr = (ArrayRecord(**manifest["arrays"][k]) for k in ("0", HR_ARRAY))
    block["hybrid"]["modes"] = chunk_modes(base, hr)

    def seal(version: str) -> None:
        block["format_version"] = manifest["format_version"] = version
        manifest["metadata_sha256"] = metadata_digest(block)
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        (copy / MANIFEST_KEY).write_bytes(data)
        block["manifest_sha256"] = hashlib.sha256(data).hexdigest()
        (copy / "zarr.json").write_text(json.dumps(group))

    seal("1.5")
    archive = Archive.open(copy)
    assert archive.info()["chunk_modes"]["hr"]["lr_bytes"] > 0
    assert all(archive.level(0).chunk_state(r, q) == "written" for r, q in _tissue(archive))
    assert verify(copy, against=SLIDE, progress=False).ok
    sr_chunk = next(rq for rq in _tissue(archive) if not archive.is_hr(*rq))
    x0, y0, x1, y1 = _hr_box(archive, *sr_chunk)
    with wsistore.open(copy, device="cpu") as slide:
        pixels = np.asarray(slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)).convert("RGB"))
    assert np.array_equal(pixels, restored[0][y0:y1, x0:x1])
    seal("1.6")
    with pytest.raises(ArchiveError, match="HR chunks still have their LR chunk stored"):
        Archive.open(copy)


def test_a_format_1_4_archive_still_reads(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    copy = tmp_path / "old.zarr"
    shutil.copytree(pair[0], copy)
    group = json.loads((copy / "zarr.json").read_text())
    block = group["attributes"]["wsistore"]
    del block["mode"], block["hybrid"]  # what 1.4 wrote
    block["format_version"] = "1.4"
    manifest = json.loads((copy / MANIFEST_KEY).read_text())
    manifest["format_version"] = "1.4"
    manifest["metadata_sha256"] = metadata_digest(block)
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (copy / MANIFEST_KEY).write_bytes(data)
    block["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (copy / "zarr.json").write_text(json.dumps(group))
    archive = Archive.open(copy)
    assert archive.metadata.format_version == "1.4" and archive.metadata.mode == "sr" and archive.hr is None
    assert archive.info()["chunk_modes"]["sr"]["chunks"] == 9
    assert verify(copy, progress=False).ok
    box = (1000, 1200, 300, 200)
    with wsistore.open(copy, model="bicubic") as old, wsistore.open(pair[0], model="bicubic") as new:
        assert np.array_equal(
            np.asarray(old.read_region(box[:2], 0, box[2:])), np.asarray(new.read_region(box[:2], 0, box[2:]))
        )


def test_an_hr_array_in_an_sr_archive_is_refused(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(pair[1], copy)
    group = json.loads((copy / "zarr.json").read_text())
    group["attributes"]["wsistore"]["mode"] = "sr"
    (copy / "zarr.json").write_text(json.dumps(group))
    _reseal(copy)
    with pytest.raises(ArchiveError, match=f"an sr archive with a {HR_ARRAY} array"):
        Archive.open(copy)


def test_the_cli_ingests_hybrid_and_refuses_hybrid_options_in_sr_mode(tmp_path: Path) -> None:
    out = tmp_path / "cli.zarr"
    args = ("--workers", "2", "--chunk", "256", "--shard", "512", "--quiet")
    one = ("--hr-codec", "avif:level=40,speed=6")
    result = run("ingest", str(SLIDE), str(out), "--mode", "hybrid", "--lambda", str(LAMBDA), *one, *args)
    assert result.returncode == 0, result.stderr
    assert "7 at full resolution (hybrid)" in result.stdout
    assert Archive.open(out).metadata.hybrid["modes"]["hr"]["chunks"] == 7  # type: ignore[index]
    # the default: 22 AVIF levels, seven of them rungs that may be probed; each chunk coded once at
    # most, at its choice, and the codings kept meanwhile in the work folder are gone
    result = run("ingest", str(SLIDE), str(tmp_path / "d.zarr"), "--mode", "hybrid", *args)
    hybrid = Archive.open(tmp_path / "d.zarr").metadata.hybrid
    assert result.returncode == 0 and hybrid is not None and len(hybrid["hr_codecs"]) == len(DEFAULT_HR_CODECS) == 22
    assert hybrid["modes"]["hr"]["chunks"] <= hybrid["hr_codings"] <= 9 and hybrid["probe"]["speed"] == PROBE_SPEED
    assert not (tmp_path / "d.zarr" / CODED_PREFIX).exists()
    assert hybrid["lambda"] == DEFAULT_HR_LAMBDA and hybrid["lambda_from"] == "the LR's slope"
    assert sum(hybrid["options"].values()) == 9 and "HR " in run("info", str(tmp_path / "d.zarr")).stdout
    both = run("ingest", str(SLIDE), str(tmp_path / "x.zarr"), "--mode", "hybrid", "--lambda", "5", "--target-bpp", "1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert_one_line_error(
        run("ingest", str(SLIDE), str(tmp_path / "x.zarr"), "--lambda", "5", *args), 2, "--mode hybrid"
    )
    refused = run("ingest", str(SLIDE), str(tmp_path / "x.zarr"), "--mode", "hybrid", "--lambda", "-1", *args)
    assert refused.returncode == 2 and "argument --lambda: must be a number at least 0" in refused.stderr


def test_on_s3_with_resume_the_bytes_of_a_local_ingest(
    s3: S3, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3.url("hybrid.zarr")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._Ingest, "_write_associated", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest(SLIDE, url, HYBRID_OPTIONS)
    monkeypatch.undo()
    with pytest.raises(ArchiveError, match="unfinished"):
        Archive.open(url)
    ingest(SLIDE, url, replace(HYBRID_OPTIONS, resume=True))
    local = pair[1]
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert s3.keys("hybrid.zarr") == files  # no settings or journal left behind
    for key in files:
        if "/c/" in key or key == MANIFEST_KEY:
            assert s3.fs.cat_file(f"{url[5:]}/{key}") == (local / key).read_bytes(), key
    report = verify(url, against=SLIDE, progress=False)
    assert report.ok, report.problems
    x, y, w, h = 900, 700, 400, 600
    with wsistore.open(url, model="bicubic") as remote, wsistore.open(local, model="bicubic") as here:
        assert np.array_equal(
            np.asarray(remote.read_region((x, y), 0, (w, h))), np.asarray(here.read_region((x, y), 0, (w, h)))
        )


def test_the_sr_path_is_restores_own_output_with_the_adaptation(tmp_path: Path) -> None:
    """With an adaptation kept, the SR path ingest measures is the adapted generator's, and it is
    exactly what restore gives for the SR chunks."""
    from tests.archive.test_adaptation import QUICK_ADAPT

    out = tmp_path / "adapted.zarr"
    ingest(SLIDE, out, replace(HYBRID_OPTIONS, adapt=QUICK_ADAPT))
    archive = Archive.open(out)
    record = archive.metadata.adaptation
    assert record is not None and record["kept"] and archive.metadata.hybrid is not None
    assert archive.metadata.hybrid["sr"]["generator"]["adaptation_sha256"] == record["sha256"]
    payload = archive.adaptation()
    assert payload is not None
    md = archive.metadata
    sr = SrPath().open(archive.level(0), (md.width, md.height), archive.codec, (payload, record))
    try:
        with wsistore.open(out, device="cpu") as slide:
            for r, q in _tissue(archive):
                x0, y0, x1, y1 = box = _hr_box(archive, r, q)
                restored = np.asarray(slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)).convert("RGB"))
                expected = archive.hr.read(box) if archive.hr is not None and archive.is_hr(r, q) else sr.read(box)
                assert np.array_equal(restored, expected), (r, q)
    finally:
        sr.close()


def test_an_adaptation_no_chunk_uses_is_not_stored(tmp_path: Path) -> None:
    """Every chunk at full resolution (lambda 0, a near-lossless HR setting): the adaptation its
    rule kept would restore nothing, so its bytes are not stored, and the record says why."""
    from tests.archive.test_adaptation import QUICK_ADAPT

    out = tmp_path / "all-hr.zarr"
    near_lossless = (parse_codec("avif:level=90,speed=8"),)
    ingest(SLIDE, out, replace(HYBRID_OPTIONS, adapt=QUICK_ADAPT, hr_lambda=0.0, hr_codecs=near_lossless))
    archive = Archive.open(out)
    record, hybrid = archive.metadata.adaptation, archive.metadata.hybrid
    assert hybrid is not None and hybrid["modes"]["sr"]["chunks"] == 0
    assert record is not None and not record["kept"] and record["reason"] == UNUSED_ADAPTATION
    assert archive.adaptation() is None and ADAPTATION_ARRAY not in archive.manifest.arrays
    assert verify(out, progress=False).ok


def test_serve_gives_the_restored_pixels_with_the_hr_chunks(
    pair: tuple[Path, Path], restored: tuple[np.ndarray, np.ndarray]
) -> None:
    import io

    from PIL import Image

    from tests.serve.conftest import running

    full = restored[1]
    with running(pair[1], None) as srv:  # type: ignore[arg-type]
        top = srv.slide.zoom().level_count - 1
        reply = srv.get(srv.tile(top, 4, 4, "png"))  # DeepZoom overlap 1: from (1015, 1015), over 4 chunks
        assert reply.status == 200
        tile = np.asarray(Image.open(io.BytesIO(reply.body)).convert("RGB"))
        assert np.array_equal(tile, full[1015 : 1015 + tile.shape[0], 1015 : 1015 + tile.shape[1]])


def test_a_tile_of_hr_chunks_never_runs_the_generator(pair: tuple[Path, Path], counting: LoadedGenerator) -> None:
    archive = Archive.open(pair[1])
    assert archive.hr is not None
    r, q = next(rq for rq in _tissue(archive) if archive.is_hr(*rq))
    x0, y0, x1, y1 = box = _hr_box(archive, r, q)  # one CPU compute tile (256 LR) per chunk
    with wsistore.open(pair[1], model=counting, device="cpu") as slide:
        pixels = np.asarray(slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)).convert("RGB"))
    assert counting.model.windows == 0  # type: ignore[attr-defined]
    assert np.array_equal(pixels, archive.hr.read(box))
