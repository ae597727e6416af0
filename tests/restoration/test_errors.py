"""Bad input to restore: one line, a non-zero exit code, nothing at OUT."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wsistore.cli import main
from wsistore.models.registry import build_generator
from wsistore.models.weights import save_generator


def restore_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["restore", *args, "--quiet", "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 0 or (len(err) == 1 and err[0].startswith("wsistore: error:")), err
    return code, err[0] if err else ""


def flip_byte(shard: Path, at: int = 200) -> None:
    data = bytearray(shard.read_bytes())
    data[at] ^= 0x01
    shard.write_bytes(bytes(data))


def test_missing_shard_is_named(archive_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (archive_copy / "0" / "c" / "0" / "0" / "0").unlink()
    code, err = restore_cli(capsys, str(archive_copy), str(tmp_path / "o.tif"))
    assert code == 3 and "shard 0/c/0/0/0 is missing" in err
    assert not (tmp_path / "o.tif").exists()


def test_damaged_chunk_is_named(archive_copy: Path, tmp_path: Path) -> None:
    flip_byte(archive_copy / "0" / "c" / "0" / "0" / "0")
    out = tmp_path / "o.tif"
    result = subprocess.run(
        [sys.executable, "-m", "wsistore", "restore", str(archive_copy), str(out), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "chunk 0 row 0 col 0 is damaged" in lines[0], result.stderr
    assert not out.exists()


def test_incomplete_archive(archive_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((archive_copy / "zarr.json").read_text())
    del meta["attributes"]["wsistore"]
    (archive_copy / "zarr.json").write_text(json.dumps(meta))
    code, err = restore_cli(capsys, str(archive_copy), str(tmp_path / "o.tif"))
    assert code == 3 and "incomplete" in err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.tif.partial").exists()


def test_model_problems(
    sample_archive: Path, tiny_edsr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.tif")
    code, err = restore_cli(capsys, str(sample_archive), out, "--model", "no-such-model")
    assert code == 2 and "unknown model 'no-such-model'" in err

    x2 = tmp_path / "x2.safetensors"
    config = {"blocks": 1, "features": 8, "scale": 2}
    save_generator(x2, build_generator("edsr", config), {"architecture": "edsr", "config": config, "scale": 2})
    code, err = restore_cli(capsys, str(sample_archive), out, "--model", str(x2))
    assert code == 2 and "upscales 2x but the archive is stored at 1/4" in err

    tampered = tmp_path / "tampered.safetensors"
    shutil.copy(tiny_edsr, tampered)
    (tmp_path / "tampered.safetensors.sha256").write_text("0" * 64 + "  tampered.safetensors\n")
    code, err = restore_cli(capsys, str(sample_archive), out, "--model", str(tampered))
    assert code == 2 and "fail their checksum" in err
    assert not any(p.name.startswith("o.tif") for p in tmp_path.iterdir())


def test_output_and_option_problems(sample_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.tif"
    out.write_bytes(b"an earlier result")
    code, err = restore_cli(capsys, str(sample_archive), str(out), "--model", "bicubic")
    assert code == 4 and "--overwrite" in err and out.read_bytes() == b"an earlier result"
    code, err = restore_cli(capsys, str(sample_archive), str(tmp_path / "n.tif"), "--region", "2000,0,500,100")
    assert code == 2 and "not inside the slide (2220 x 2967)" in err
    code, err = restore_cli(capsys, str(sample_archive), str(tmp_path / "n"), "--format", "zarr", "--quality", "80")
    assert code == 2 and "always lossless" in err
    code, err = restore_cli(capsys, str(sample_archive), str(tmp_path / "n.tif"), "--tile", "300")
    assert code == 2 and "power of two" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]


def test_resume_with_other_settings_is_refused(
    sample_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "o.tif.partial"
    partial.mkdir()
    (partial / "restore-settings.json").write_text(json.dumps({"format": "tiff", "tile": 1024}))
    code, err = restore_cli(capsys, str(sample_archive), str(tmp_path / "o.tif"), "--resume", "--model", "bicubic")
    assert code == 2 and "different settings" in err and "tile" in err
