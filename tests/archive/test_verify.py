"""verify: a sound archive passes; any lost, changed or extra byte fails, named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wsistore.archive.reader import Archive
from wsistore.archive.verify import verify
from wsistore.errors import ArchiveError


def test_sound_archive_passes_against_its_source(sample_archive: Path, slide_path: Path) -> None:
    report = verify(sample_archive, against=slide_path, progress=False)
    assert report.ok, report.problems
    assert report.shards >= 4 and report.chunks >= 9 + 3
    assert report.against["sha256_matches"] and report.against["chunks_compared"] == 9


def test_deleted_shard_is_reported_as_lost_chunks(archive_copy: Path) -> None:
    (archive_copy / "0" / "c" / "0" / "0" / "0").unlink()
    report = verify(archive_copy, progress=False)
    assert not report.ok
    assert any("shard 0/c/0/0/0 is missing" in p and "lost" in p for p in report.problems)


def test_flipped_byte_is_detected(archive_copy: Path) -> None:
    shard = archive_copy / "0" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify(archive_copy, progress=False)
    assert not report.ok
    assert any("changed since ingest" in p for p in report.problems)
    assert any("does not decode" in p and "row 0 col 0" in p for p in report.problems)


def test_damaged_chunk_is_never_read_silently(archive_copy: Path) -> None:
    shard = archive_copy / "0" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x01
    shard.write_bytes(bytes(data))
    archive = Archive.open(archive_copy)
    with pytest.raises(ArchiveError, match="row 0 col 0 is damaged"):
        archive.read_lr(0, (0, 0, 100, 100))


def test_chunk_removed_from_a_shard_is_lost_not_background(archive_copy: Path) -> None:
    """Rewrite a shard index so one chunk reads as empty: verify and reads both refuse."""
    import numpy as np

    shard = archive_copy / "0" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    record = Archive.open(archive_copy).manifest.arrays["0"]
    n = int(np.prod(record.chunks_per_shard))
    index = np.frombuffer(bytes(data[-(16 * n + 4) : -4]), dtype="<u8").copy().reshape(n, 2)
    index[0] = 2**64 - 1
    import google_crc32c

    raw = index.astype("<u8").tobytes()
    data[-(16 * n + 4) :] = raw + google_crc32c.value(raw).to_bytes(4, "little")
    shard.write_bytes(bytes(data))
    report = verify(archive_copy, progress=False)
    assert any("0 row 0 col 0 is lost" in p for p in report.problems)
    with pytest.raises(ArchiveError, match="missing"):
        Archive.open(archive_copy).read_lr(0, (0, 0, 10, 10))


def test_extra_file_is_reported(archive_copy: Path) -> None:
    extra = archive_copy / "0" / "c" / "0" / "9" / "9"
    extra.parent.mkdir(parents=True)
    extra.write_bytes(b"junk")
    assert any("not in the manifest" in p for p in verify(archive_copy, progress=False).problems)


def test_edited_manifest_is_refused(archive_copy: Path) -> None:
    manifest = archive_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version"', '"format_version" ', 1))
    with pytest.raises(ArchiveError, match="does not match"):
        verify(archive_copy, progress=False)


def test_archive_without_metadata_is_incomplete(archive_copy: Path) -> None:
    meta = json.loads((archive_copy / "zarr.json").read_text())
    del meta["attributes"]["wsistore"]
    (archive_copy / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ArchiveError, match="incomplete"):
        verify(archive_copy, progress=False)


def test_wrong_source_fails(sample_archive: Path, mosaic_slide: Path, tmp_path: Path) -> None:
    report = verify(sample_archive, against=mosaic_slide, progress=False)
    assert not report.ok
    assert any("not the archived source" in p for p in report.problems)


def test_same_pixels_different_file_fails_only_the_checksum(
    sample_archive: Path, slide_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.svs"
    shutil.copy(slide_path, copy)
    with open(copy, "ab") as f:
        f.write(b"\0")  # trailing byte: same pixels, different file
    report = verify(sample_archive, against=copy, progress=False)
    assert report.problems == ["copy.svs is not the archived source (sha256 differs)"]
    assert report.against["chunks_compared"] == 9


def test_an_edit_to_the_metadata_block_is_detected(archive_copy: Path) -> None:
    """Format 1.3: the manifest records a digest of the wsistore block, so even a descriptive
    field (the source's name) cannot be changed unnoticed; the creation time is left out."""
    group_path = archive_copy / "zarr.json"
    group = json.loads(group_path.read_text())
    group["attributes"]["wsistore"]["created"] = "2000-01-01T00:00:00+00:00"
    group_path.write_text(json.dumps(group))
    assert verify(archive_copy, progress=False).ok  # not covered: the same slide gives the same bytes
    group["attributes"]["wsistore"]["source"]["file_name"] = "another.svs"
    group_path.write_text(json.dumps(group))
    report = verify(archive_copy, progress=False)
    assert not report.ok and any("metadata block was changed" in p for p in report.problems)
    with pytest.raises(ArchiveError, match="metadata block was changed"):
        Archive.open(archive_copy)


def test_a_second_decoder_checks_the_pixels(sample_archive: Path, slide_path: Path) -> None:
    """The sample was read by tiffslide; OpenSlide reads the same tissue chunks again."""
    report = verify(sample_archive, against=slide_path, progress=False)
    assert report.ok and report.against is not None
    assert report.against["decoders"] == ["tiffslide", "openslide"]
    assert report.against["independent_chunks"] == 9 and report.against["independent_worst_db"] > -0.1


def test_a_misplacement_shared_by_ingest_and_verify_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two frames swapped by the reader ingest and verify share (a bug in wsidicom's placement,
    say): the archive matches that reading, but pydicom's frames, placed independently, do not."""
    import numpy as np

    from tests.slides import real_image, write_dicom_frames
    from wsistore.archive.writer import IngestOptions, ingest
    from wsistore.readers import DicomReader

    source = write_dicom_frames(tmp_path / "s.dcm", real_image(1000, 1000), tile=250, order="row")
    read = DicomReader._read

    def swapped(self: DicomReader, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        whole = read(self, level, (0, 0), self.level_dimensions[level]).copy()
        a, b = whole[0:250, 0:250].copy(), whole[500:750, 750:1000].copy()
        whole[0:250, 0:250], whole[500:750, 750:1000] = b, a
        (x, y), (w, h) = location, size
        return whole[y : y + h, x : x + w]

    monkeypatch.setattr(DicomReader, "_read", swapped)
    ingest(source, tmp_path / "a.zarr", IngestOptions(progress=False, workers=1))
    report = verify(tmp_path / "a.zarr", against=source, progress=False)
    assert report.against is not None and report.against["decoders"] == ["dicom", "pydicom"]
    wrong = [p for p in report.problems if "pydicom's reading of the source gives" in p]
    assert wrong and all("wrong image or misplaced tiles" in p for p in wrong)
    assert not [p for p in report.problems if p not in wrong]  # the shared reading itself agrees
