"""The DeepZoom convention: a client given only ``/slides/NAME.dzi`` asks for
``/slides/NAME_files/LEVEL/COL_ROW.FORMAT``. Every tile such a client computes from the
descriptor alone is served with the size it expects, revalidated rather than kept forever
(the URL carries no version), and a stock OpenSeadragon in headless Chromium loads the slide
down to full resolution from the ``.dzi`` URL alone."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.serve.conftest import LoggedRequests, need_browser, running, wait_for

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"

#: A page that knows nothing of wsistore but the descriptor's URL: the OpenSeadragon the
#: viewer ships, with its defaults.
STOCK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>stock</title></head>
<body style="margin:0"><div id="osd" style="width:1000px;height:700px"></div>
<script src="/static/openseadragon/openseadragon.min.js"></script>
<script>
window.loaded = []; window.failed = [];
window.viewer = OpenSeadragon({id: "osd", prefixUrl: "/static/openseadragon/images/",
                               tileSources: "/slides/sample.dzi"});
viewer.addHandler("tile-loaded", function (e) { loaded.push(e.tile.getUrl()); });
viewer.addHandler("tile-load-failed", function (e) { failed.push(e.tile.getUrl() + ": " + e.message); });
</script></body></html>
"""


def dzi_tiles(descriptor: bytes, level: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Each tile ``(col, row)`` of ``level`` and its size, as the DeepZoom format defines them
    from the descriptor's Size, TileSize and Overlap (not from the server's own generator)."""
    root = ET.fromstring(descriptor)
    size = root.find(f"{DZ}Size")
    assert size is not None
    width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
    tile, overlap = int(root.get("TileSize", 0)), int(root.get("Overlap", 0))
    scale = 2 ** (math.ceil(math.log2(max(width, height))) - level)
    w, h = math.ceil(width / scale), math.ceil(height / scale)

    def span(i: int, n: int) -> int:
        return min(n, (i + 1) * tile + overlap) - max(0, i * tile - overlap)

    return {(c, r): (span(c, w), span(r, h)) for c in range(math.ceil(w / tile)) for r in range(math.ceil(h / tile))}


def test_every_tile_a_dzi_client_computes_is_served(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic", max_tiles=2) as srv:
        descriptor = srv.get("/slides/sample.dzi").body
        root = ET.fromstring(descriptor)
        assert root.get("Format") == "jpeg"
        finest = math.ceil(math.log2(2967))
        assert finest == srv.slide.zoom().level_count - 1 == 12
        for level in (finest, 9, 0):  # super-resolved; the stored pyramid (278 x 371); one pixel
            want = dzi_tiles(descriptor, level)
            urls = {rc: f"/slides/sample_files/{level}/{rc[0]}_{rc[1]}.jpeg" for rc in want}
            with ThreadPoolExecutor(4) as pool:
                replies = dict(zip(urls, pool.map(srv.get, urls.values())))
            for rc, reply in replies.items():
                assert reply.status == 200, (urls[rc], reply.body)
                picture = Image.open(io.BytesIO(reply.body))
                assert picture.format == "JPEG" and picture.size == want[rc], urls[rc]
        assert len(dzi_tiles(descriptor, finest)) == 9 * 12 and len(dzi_tiles(descriptor, 9)) == 4

        # the same image as the versioned URL, but revalidated: it names no version
        plain = srv.get("/slides/sample_files/12/3_4.png")
        versioned = srv.get(srv.tile(12, 3, 4, "png"))
        assert plain.status == 200 and plain.body == versioned.body
        assert plain.headers["cache-control"] == "no-cache" and versioned.headers["cache-control"].endswith("immutable")
        assert plain.headers["etag"] == versioned.headers["etag"] and srv.slide.version in plain.headers["etag"]
        assert srv.get("/slides/sample_files/12/3_4.png", {"If-None-Match": plain.headers["etag"]}).status == 304
        bicubic = srv.get("/slides/sample_files/12/3_4.png?method=bicubic")
        assert bicubic.status == 200 and bicubic.headers["etag"] != plain.headers["etag"]
        for path, status in (
            ("/slides/nope_files/12/0_0.jpeg", 404),
            ("/slides/sample_files/13/0_0.jpeg", 404),
            ("/slides/sample_files/12/9_0.jpeg", 404),
            ("/slides/sample_files/12/0_0.gif", 400),
            ("/slides/sample_files/x/0_0.jpeg", 400),
        ):
            reply = srv.get(path)
            assert reply.status == status and reply.body.count(b"\n") == 1, (path, reply.body)


def test_stock_openseadragon_loads_full_resolution_from_the_dzi_alone(sample_archive: Path) -> None:
    need_browser()
    from benchmarks.browser import chromium

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(STOCK_PAGE)

    with LoggedRequests() as requests, running(sample_archive, "bicubic", routes=[Route("/stock", page)]) as srv:
        with chromium() as driver:
            driver.get(srv.url + "/stock")
            wait_for(driver, "return viewer.world.getItemCount() > 0 && viewer.world.getItemAt(0).getFullyLoaded()")
            driver.execute_script(
                "const it = viewer.world.getItemAt(0);"
                "viewer.viewport.zoomTo(it.imageToViewportZoom(1.0), null, true);"
                "viewer.viewport.panTo(it.imageToViewportCoordinates(1250, 1900), true);"
            )
            wait_for(
                driver,
                "return viewer.world.getItemAt(0).getFullyLoaded()"
                " && loaded.some(function (u) { return u.indexOf('/sample_files/12/') >= 0; })",
            )
            loaded, failed = driver.execute_script("return [loaded, failed]")
    assert failed == []
    assert sum("/slides/sample_files/12/" in u for u in loaded) >= 12  # 1000 x 700 at 1:1: 4 x 3 tiles at least
    tiles = [(path, status) for path, status in requests.seen if "_files/" in path]
    finest = [path for path, status in tiles if path.startswith("/slides/sample_files/12/")]
    assert len(finest) >= 12 and all(status == 200 for _, status in tiles), tiles
    assert ("/slides/sample.dzi", 200) in requests.seen
