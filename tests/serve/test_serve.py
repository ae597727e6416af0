"""``wsistore serve`` against the real server on 127.0.0.1 over the real sample archive:
the index, the DeepZoom descriptor, tiles (super-resolved at the finest levels, the stored
pyramid below), HTTP caching, clear 4xx errors, single-flight under concurrency, the
bicubic comparison and the associated images."""

from __future__ import annotations

import io
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.generators import CountingGenerator
from tests.s3 import BUCKET, S3
from tests.serve.conftest import Reply, fetch, running
from wsistore.models.weights import LoadedGenerator, default_model
from wsistore.serve.app import IMMUTABLE

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"


def image(reply: Reply) -> Image.Image:
    assert reply.status == 200, reply.body
    return Image.open(io.BytesIO(reply.body))


def test_index_descriptor_summary_and_associated(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        index = srv.get("/")
        assert index.status == 200 and index.headers["content-type"].startswith("text/html")
        text = index.body.decode()
        for want in ("sample", "skin_cmu1-small-region_aperio-20x.svs", "2220 x 2967 px", "0.499", "bicubic"):
            assert want in text
        assert "avif" in text and "smaller than" in text and "%" in text

        dzi = srv.get("/slides/sample.dzi")
        assert dzi.status == 200 and "xml" in dzi.headers["content-type"]
        root = ET.fromstring(dzi.body)
        assert root.tag == f"{DZ}Image" and root.get("Format") == "jpeg"
        assert root.get("TileSize") == "254" and root.get("Overlap") == "1"
        size = root.find(f"{DZ}Size")
        assert size is not None and (size.get("Width"), size.get("Height")) == ("2220", "2967")

        summary = srv.get("/slides/sample.json")
        assert summary.status == 200
        import json

        data = json.loads(summary.body)
        assert data["version"] == srv.slide.version and data["levels"][-1] == [2220, 2967]
        assert data["model"]["name"] == "bicubic" and data["info"]["source"].endswith(".svs")
        assert data["super_resolved_levels"] == [len(data["levels"]) - 2, len(data["levels"]) - 1]

        label = image(srv.get("/slides/sample/associated/label.png"))
        assert label.format == "PNG" and label.size[0] > 0
        again = srv.get(
            "/slides/sample/associated/label.png",
            {"If-None-Match": srv.get("/slides/sample/associated/label.png").headers["etag"]},
        )
        assert again.status == 304
        missing = srv.get("/slides/sample/associated/nothing.png")
        assert missing.status == 404 and b"label" in missing.body


def test_finest_tile_super_resolved_coarse_tiles_from_the_pyramid(
    sample_archive: Path, counting: LoadedGenerator
) -> None:
    with running(sample_archive, counting) as srv:
        zoom = srv.slide.zoom()
        top = zoom.level_count - 1
        assert srv.counting is not None
        for level in range(top - 1):  # 4x and coarser: the stored pyramid
            cols, rows = zoom.level_tiles[level]
            for ext in ("jpeg", "png"):
                got = image(srv.get(srv.tile(level, cols - 1, rows - 1, ext)))
                assert got.size == zoom.get_tile(level, (cols - 1, rows - 1)).size
        assert srv.counting.windows == 0
        reply = srv.get(srv.tile(top, 2, 3, "png"))
        tile = image(reply)
        assert tile.format == "PNG" and tile.size == zoom.get_tile_dimensions(top, (2, 3)) == (256, 256)
        assert srv.counting.windows == 1
        want = np.asarray(srv.slide.slide.read_region((2 * 254 - 1, 3 * 254 - 1), 0, (256, 256)))[..., :3]
        assert np.array_equal(np.asarray(tile.convert("RGB")), want)  # the restored region, losslessly
        jpeg = image(srv.get(srv.tile(top, 2, 3)))
        assert jpeg.format == "JPEG" and jpeg.size == (256, 256)
        assert srv.counting.windows == 1  # the compute tile is cached


def test_caching_headers_and_304(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        url = srv.tile(srv.slide.zoom().level_count - 1, 0, 0)
        first = srv.get(url)
        assert first.status == 200
        assert first.headers["cache-control"] == IMMUTABLE
        etag = first.headers["etag"]
        assert etag.startswith('"') and srv.slide.version in etag
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            cached = srv.get(url, {"If-None-Match": header})
            assert cached.status == 304 and cached.body == b"" and cached.headers["etag"] == etag
        assert srv.get(url, {"If-None-Match": '"other"'}).status == 200
        manifest = srv.slide.archive.metadata.manifest_sha256
        assert srv.slide.version == f"{manifest[:16]}-bicubic"
        bicubic = srv.get(url + "?method=bicubic")
        assert bicubic.headers["etag"] != etag


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/slides/nope.dzi", 404, "unknown slide"),
        ("/slides/nope/{v}/0/0_0.jpeg", 404, "unknown slide"),
        ("/slides/sample/0123-stale/12/0_0.jpeg", 404, "stale or unknown version"),
        ("/slides/sample/{v}/99/0_0.jpeg", 404, "level 99 outside"),
        ("/slides/sample/{v}/12/999_0.jpeg", 404, "outside level 12"),
        ("/slides/sample/{v}/12/0_999.jpeg", 404, "outside level 12"),
        ("/slides/sample/{v}/x/0_0.jpeg", 400, "malformed level"),
        ("/slides/sample/{v}/-1/0_0.jpeg", 400, "malformed level"),
        ("/slides/sample/{v}/12/0-0.jpeg", 400, "malformed tile"),
        ("/slides/sample/{v}/12/0_0.gif", 400, "unknown tile format"),
        ("/slides/sample/{v}/12/0_0.jpeg?method=magic", 400, "unknown method"),
        ("/slides/sample/{v}/12/0_0", 400, "malformed tile"),
        ("/slides/sample/{v}/12/0_0.jpeg/extra", 404, "Not Found"),
        ("/nothing/here", 404, "Not Found"),
        ("/slides/sample/associated/../../etc/passwd", 404, "Not Found"),
    ],
)
def test_errors_are_one_line_4xx(sample_archive: Path, path: str, status: int, text: str) -> None:
    with running(sample_archive, "bicubic") as srv:
        reply = srv.get(path.replace("{v}", srv.slide.version))
        assert reply.status == status, reply.body
        body = reply.body.decode()
        assert text in body and body.strip().count("\n") == 0 and "Traceback" not in body


def test_concurrent_requests_compute_each_tile_once(sample_archive: Path, counting: LoadedGenerator) -> None:
    with running(sample_archive, counting, max_tiles=2) as srv:
        assert srv.counting is not None
        top = srv.slide.zoom().level_count - 1
        # DeepZoom tiles (0..3, 0..3) of 254 px lie in compute tiles (0, 0) .. (0..1, 0..1) of 1024 px
        urls = [srv.tile(top, col, row) for col in range(4) for row in range(4) for _ in range(2)]
        barrier = threading.Barrier(len(urls))

        def get(url: str) -> Reply:
            barrier.wait()
            return fetch(srv.url + url)

        with ThreadPoolExecutor(len(urls)) as pool:
            replies = list(pool.map(get, urls))
        assert all(r.status == 200 for r in replies)
        assert srv.counting.windows == 1  # 4 x 254 + 1 < 1024: all in compute tile (0, 0)
        assert all(replies[2 * i].body == replies[2 * i + 1].body for i in range(16))


def test_default_model_tile_differs_from_bicubic(sample_archive: Path) -> None:
    model = default_model()
    assert model == "compact-l1-gpu"
    with running(sample_archive, model) as srv:
        assert srv.slide.model_name == model and len(srv.slide.model_sha256) == 64
        assert srv.slide.version.endswith("-" + srv.slide.model_sha256[:16])
        assert model in srv.get("/").body.decode()
        top = srv.slide.zoom().level_count - 1
        sr = np.asarray(image(srv.get(srv.tile(top, 4, 5, "png"))).convert("RGB")).astype(int)
        bicubic = np.asarray(image(srv.get(srv.tile(top, 4, 5, "png", "?method=bicubic"))).convert("RGB")).astype(int)
        assert sr.shape == bicubic.shape == (256, 256, 3)
        assert np.abs(sr - bicubic).mean() > 0.5
        coarse = srv.tile(top - 2, 0, 0, "png")
        assert srv.get(coarse).body == srv.get(coarse + "?method=bicubic").body  # the stored pyramid for both


def test_counting_generator_is_what_the_server_runs(counting: LoadedGenerator) -> None:
    assert isinstance(counting.model, CountingGenerator)


def test_tiles_made_at_once_are_bounded(sample_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from wsistore.serve import app

    encode = app._encode_tile
    lock, now, peak = threading.Lock(), [0], [0]

    def slow(*args: object) -> bytes:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        try:
            return encode(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(app, "_encode_tile", slow)
    with running(sample_archive, "bicubic", max_tiles=3) as srv:
        top = srv.slide.zoom().level_count - 1
        urls = [srv.tile(top, col, row) for col in range(6) for row in range(4)]
        with ThreadPoolExecutor(len(urls)) as pool:
            replies = list(pool.map(lambda u: fetch(srv.url + u), urls))
        assert all(r.status == 200 for r in replies)
        assert peak[0] == 3


def test_one_log_line_per_request(sample_archive: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="wsistore.serve"), running(sample_archive, "bicubic") as srv:
        srv.get("/")
        srv.get("/slides/nope.dzi")
        srv.get(srv.tile(0, 0, 0) + "?method=bicubic")
    lines = [r.getMessage() for r in caplog.records if r.name == "wsistore.serve"]
    assert len(lines) == 3
    assert lines[0].startswith("127.0.0.1 GET / 200 ")
    assert " GET /slides/nope.dzi 404 " in lines[1]
    assert "?method=bicubic 200 " in lines[2] and lines[2].endswith("ms")


def test_an_internal_failure_is_a_one_line_500(sample_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsistore.serve import app

    def broken(*args: object) -> bytes:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(app, "_encode_tile", broken)
    with running(sample_archive, "bicubic") as srv:
        reply = srv.get(srv.tile(0, 0, 0))
        assert reply.status == 500 and reply.body == b"internal error: RuntimeError\n"
        assert srv.get("/").status == 200  # the server lives on


def test_32_concurrent_tiles_compute_each_compute_tile_once(sample_archive: Path, counting: LoadedGenerator) -> None:
    with running(sample_archive, counting) as srv:
        assert srv.counting is not None
        zoom = srv.slide.zoom()
        top = zoom.level_count - 1
        restorer = srv.slide.slide._restorer
        addresses = [(col, row) for col in range(8) for row in range(2, 6)]  # 32 tiles over 2 x 2 compute tiles
        needed: set[tuple[int, int]] = set()
        for col, row in addresses:
            (x, y), _, (w, h) = zoom.get_tile_coordinates(top, (col, row))
            needed |= {rc for rc in restorer.grid.tiles_in((x, y, x + w, y + h)) if not restorer.is_background(*rc)}
        assert len(needed) == 4
        barrier = threading.Barrier(len(addresses))

        def get(address: tuple[int, int]) -> Reply:
            barrier.wait()
            return fetch(srv.url + srv.tile(top, *address, "png"))

        with ThreadPoolExecutor(len(addresses)) as pool:
            replies = list(pool.map(get, addresses))
        assert all(r.status == 200 for r in replies)
        assert srv.counting.windows == len(needed)


def test_a_tile_equals_read_region_of_wsistore_open(sample_archive: Path) -> None:
    import wsistore

    with running(sample_archive, "bicubic") as srv:
        zoom = srv.slide.zoom()
        top = zoom.level_count - 1
        (x, y), level, size = zoom.get_tile_coordinates(top, (5, 7))
        got = np.asarray(image(srv.get(srv.tile(top, 5, 7, "png"))).convert("RGB"))
    with wsistore.open(sample_archive, model="bicubic", device="cpu") as slide:
        want = np.asarray(slide.read_region((x, y), level, size))[..., :3]
    assert level == 0 and got.shape == want.shape and np.array_equal(got, want)


def test_an_archive_on_s3_is_served_as_the_local_one(s3: S3, sample_archive: Path) -> None:
    from wsistore.serve.app import build_app, open_slides
    from wsistore.serve.server import ServerThread

    s3.fs.put(str(sample_archive), f"{BUCKET}/served.zarr", recursive=True)
    slides = open_slides([s3.url("served.zarr")], "bicubic", "cpu", storage_options={"endpoint_url": s3.endpoint})
    assert [s.name for s in slides] == ["served"]
    with ServerThread(build_app(slides)) as server, running(sample_archive, "bicubic") as local:
        version = slides[0].version
        assert version == local.slide.version  # the same manifest: the same tile URLs
        assert "served" in fetch(server.url + "/").body.decode()
        for level, col, row in ((12, 4, 6), (9, 0, 0)):
            for query in ("", "?method=bicubic"):
                remote = fetch(f"{server.url}/slides/served/{version}/{level}/{col}_{row}.png{query}")
                here = local.get(local.tile(level, col, row, "png", query))
                assert remote.status == 200 and remote.body == here.body
