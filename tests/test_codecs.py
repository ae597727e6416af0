"""Image codecs: round trips on real tissue, recorded settings, zarr integration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, TransposeCodec

from wsistore.codecs import CODECS, JpegXlCodec, codec_from_config, make_codec, parse_codec
from wsistore.errors import InputError


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_on_real_tile(name: str, tile: np.ndarray) -> None:
    codec = make_codec(name)
    image = np.ascontiguousarray(tile[:256, :200])
    data = codec.encode_image(image)
    decoded = codec.decode_image(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert len(data) < image.nbytes
    error = np.abs(decoded.astype(int) - image).mean()
    if codec.lossless:
        assert error == 0
    else:
        assert 0 < error < 6, f"{name} mean abs error {error}"


@pytest.mark.parametrize("name", sorted(CODECS))
def test_config_round_trip_records_every_setting(name: str) -> None:
    codec = make_codec(name)
    as_dict = codec.to_dict()
    assert as_dict["name"] == f"imagecodecs_{name}"
    assert codec_from_config(json.loads(json.dumps(as_dict))) == codec
    assert all(v is not None for v in as_dict["configuration"].values())


def test_quality_maps_to_the_codec_knob() -> None:
    assert parse_codec("jpegxl", 2.5) == JpegXlCodec(distance=2.5)
    assert make_codec("avif", 40).level == 40
    assert parse_codec("jpegxl:effort=5,distance=0.5").effort == 5
    assert parse_codec("jpegxl:lossless=true").lossless


def test_quality_changes_bytes(tile: np.ndarray) -> None:
    image = np.ascontiguousarray(tile[:256, :256])
    sizes = [len(make_codec("jpegxl", d).encode_image(image)) for d in (0.5, 1.0, 3.0)]
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.parametrize(
    "text, quality, message",
    [
        ("nosuch", None, "unknown codec 'nosuch'"),
        ("jpegxl:effort=99", None, r"jpegxl effort must be in \[1, 10\], got 99"),
        ("avif:speed=11", None, r"avif speed must be in \[0, 10\]"),
        ("png", 3.0, "codec png is lossless and takes no quality"),
        ("jpegxl:bogus=1", None, "codec jpegxl has no setting bogus"),
        ("jpegxl:effort", None, "not key=value"),
        ("jpegxl", 30.0, r"jpegxl distance must be in \(0, 25\]"),
        ("avif:pixelformat=RGB", None, "avif pixelformat must be YUV444, YUV422 or YUV420, got RGB"),
        ("avif:bitspersample=10", None, "avif bitspersample must be 8, got 10"),
        ("jpeg2k:codecformat=JPX", None, "jpeg2k codecformat must be J2K or JP2, got JPX"),
        ("avif:level=x", None, "avif level must be a number"),
        ("webp:level=x", None, "invalid webp settings"),
    ],
)
def test_invalid_settings_are_input_errors(text: str, quality: float | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_codec(text, quality)


def test_zarr_array_with_image_codec_reads_in_a_fresh_process(tmp_path: Path, tile: np.ndarray) -> None:
    """Stored (c, y, x) with transpose + image codec + crc32c; a new interpreter reads it
    through the installed ``zarr.codecs`` entry points alone."""
    data = np.ascontiguousarray(tile[:300, :280].transpose(2, 0, 1))
    array = zarr.create_array(
        tmp_path / "a.zarr",
        shape=data.shape,
        chunks=(3, 128, 128),
        shards=(3, 256, 256),
        dtype="uint8",
        filters=[TransposeCodec(order=(1, 2, 0))],
        serializer=make_codec("png"),
        compressors=[Crc32cCodec()],
        fill_value=0,
    )
    array[...] = data
    code = (
        "import zarr, numpy as np, sys;"
        f"a = zarr.open_array({str(tmp_path / 'a.zarr')!r}, mode='r');"
        "np.save(sys.stdout.buffer, a[...])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    import io

    assert np.array_equal(np.load(io.BytesIO(out)), data)


def test_quality_in_the_codec_text_is_the_codecs_own_knob() -> None:
    assert parse_codec("jpeg:quality=80") == parse_codec("jpeg:level=80") == make_codec("jpeg", 80)
    assert parse_codec("jpegxl:quality=2") == make_codec("jpegxl", 2)
    with pytest.raises(InputError, match="given twice"):
        parse_codec("jpeg:quality=80", 70)
