// The slide viewer of `wsistore serve`: OpenSeadragon over the server's versioned DeepZoom
// tiles, with a scale bar from the slide's mpp, a navigator, a comparison between the model
// and plain bicubic of the same stored pixels (switch or swipe), the archive's loss map as a
// heat map and, in a hybrid archive, the chunks stored at full resolution. The view (centre,
// zoom, comparison, overlays) is kept in the page's URL (#x=..&y=..&zoom=..&mode=..&loss=1
// &hr=1), so a copied address opens the same view; x and y are the
// centre in full-resolution pixels, zoom is screen pixels per full-resolution pixel.
// Everything comes from this server; nothing is fetched from elsewhere.
"use strict";

(async function () {
    const root = document.getElementById("viewer");
    const summary = await (await fetch(root.dataset.summary)).json();
    const [width, height] = summary.info.dimensions;
    const mpp = summary.info.mpp; // [x, y] micrometres per pixel, or null
    const state = { loaded: { model: 0, bicubic: 0 }, mode: "model", swipe: 0.5, ready: false };
    window.wsistore = state; // read by the browser tests

    function tileSource(method) {
        const query = method === "model" ? "" : "?method=" + method;
        return {
            width: width,
            height: height,
            tileSize: summary.tile_size,
            tileOverlap: summary.overlap,
            minLevel: 0,
            maxLevel: summary.levels.length - 1,
            getTileUrl: function (level, x, y) {
                return summary.tiles.replace("{level}", level).replace("{col}", x).replace("{row}", y) + query;
            },
        };
    }

    const viewer = OpenSeadragon({
        element: root,
        prefixUrl: "/static/openseadragon/images/",
        tileSources: tileSource("model"),
        drawer: "canvas",
        showNavigator: true,
        autoHideControls: false,
        navigatorPosition: "TOP_RIGHT",
        maxZoomPixelRatio: 2,
        crossOriginPolicy: false,
        immediateRender: false,
    });
    state.viewer = viewer;
    const items = {}; // method -> TiledImage
    let ownHash = location.hash; // the address as this page last applied or wrote it

    viewer.addHandler("open", function () {
        items.model = viewer.world.getItemAt(0);
        ownHash = location.hash;
        applyHash();
        updateScaleBar();
        state.ready = true; // read by the browser tests: the view of the URL is applied
        writeHashSoon();
    });
    viewer.addHandler("tile-loaded", function (event) {
        const method = event.tiledImage === items.bicubic ? "bicubic" : event.tiledImage === items.model ? "model" : null;
        if (method) state.loaded[method] += 1;
    });

    // --- comparison: model, bicubic, or a swipe between the two ---------------------------
    function withBicubic(then) {
        if (items.bicubic) return then(items.bicubic);
        viewer.addTiledImage({
            tileSource: tileSource("bicubic"),
            index: 1,
            success: function (event) {
                items.bicubic = event.item;
                then(items.bicubic);
            },
        });
    }

    function setMode(mode) {
        state.mode = mode;
        document.getElementById("swipe").hidden = mode !== "swipe";
        if (mode === "model") {
            if (items.bicubic) items.bicubic.setOpacity(0);
            return;
        }
        withBicubic(function (bicubic) {
            bicubic.setOpacity(1);
            updateClip();
        });
    }

    function updateClip() {
        const bicubic = items.bicubic;
        if (!bicubic) return;
        if (state.mode !== "swipe") {
            bicubic.setClip(null);
            return;
        }
        const x = state.swipe * root.clientWidth;
        const image = bicubic.viewerElementToImageCoordinates(new OpenSeadragon.Point(x, 0));
        bicubic.setClip(new OpenSeadragon.Rect(0, 0, Math.max(0, image.x), height));
        document.getElementById("swipe-line").style.left = 100 * state.swipe + "%";
    }

    for (const input of document.querySelectorAll("input[name=method]")) {
        input.addEventListener("change", function () {
            setMode(input.value);
            writeHashSoon();
        });
    }
    const swipePosition = document.getElementById("swipe-position");
    swipePosition.addEventListener("input", function () {
        state.swipe = Number(swipePosition.value) / 100;
        updateClip();
        writeHashSoon();
    });
    viewer.addHandler("viewport-change", updateClip);

    // --- overlays: the loss map, and a hybrid archive's chunks stored at full resolution ----
    // Each is one picture (a cell per level-0 chunk) over the slide, shown by its toggle, kept
    // in the address as KEY=1.
    function overlay(spec, toggleId, key) {
        const o = { spec: spec, toggle: document.getElementById(toggleId), key: key, item: null, pending: false };
        if (!o.toggle) return null; // no toggle on this page (not a hybrid archive)
        if (!spec) {
            o.toggle.disabled = true;
            return o;
        }
        o.toggle.addEventListener("change", function () {
            showOverlay(o);
            writeHashSoon();
        });
        return o;
    }

    function showOverlay(o) {
        if (!o.spec) return;
        if (o.item || o.pending) {
            if (o.item) o.item.setOpacity(o.toggle.checked ? o.spec.opacity : 0);
            return;
        }
        if (!o.toggle.checked) return;
        o.pending = true;
        viewer.addTiledImage({
            tileSource: { type: "image", url: o.spec.url, buildPyramid: false },
            x: 0,
            y: 0,
            width: o.spec.world_width,
            opacity: o.spec.opacity,
            // the last cells reach past the slide's edge: draw only what lies on it
            clip: new OpenSeadragon.Rect(0, 0, (width * o.spec.cell_px) / o.spec.cell, (height * o.spec.cell_px) / o.spec.cell),
            success: function (event) {
                o.item = event.item;
                // toggled off while it loaded
                if (!o.toggle.checked) o.item.setOpacity(0);
            },
        });
    }

    const loss = summary.loss_map, modes = summary.chunk_modes;
    const MODE_TEXT = {
        hr: "stored at full resolution",
        sr: "restored by the model",
        bicubic: "restored by bicubic (the model restores it worse)",
    };
    const overlays = [overlay(loss, "loss-toggle", "loss"), overlay(modes, "hr-toggle", "hr")].filter(Boolean);
    if (!loss) {
        document.getElementById("loss-label").title = "this archive has no loss map (format before 1.2)";
    } else {
        document.getElementById("legend-bar").style.background =
            "linear-gradient(to right, " + loss.legend.join(", ") + ")";
        document.getElementById("legend-max").textContent = "\u2265 " + loss.vmax;
    }

    // the value under the cursor: the chunk's loss, and its mode in a hybrid archive
    function cellValue(spec, p) {
        return spec ? (spec.values[Math.floor(p.y / spec.cell)] || [])[Math.floor(p.x / spec.cell)] : undefined;
    }
    if (loss || modes) {
        viewer.addHandler("canvas-exit", function () {
            document.getElementById("readout").textContent = "";
        });
        new OpenSeadragon.MouseTracker({
            element: viewer.canvas,
            moveHandler: function (event) {
                if (!items.model) return;
                const p = items.model.viewerElementToImageCoordinates(event.position);
                const value = cellValue(loss, p), mode = cellValue(modes, p);
                const parts = [];
                if (value === null || mode === null) parts.push("background (not stored)");
                else {
                    if (mode) parts.push(MODE_TEXT[mode]);
                    if (typeof value === "number") parts.push("archive loss here: " + value.toFixed(1) + " grey levels RMS");
                }
                document.getElementById("readout").textContent = parts.join("; ");
            },
        });
    }

    // --- a view you can share: the URL's hash holds it, the URL's hash restores it --------
    function applyHash() {
        const p = new URLSearchParams(location.hash.slice(1));
        const number = function (key) {
            const value = p.get(key) === null || p.get(key) === "" ? NaN : Number(p.get(key));
            return Number.isFinite(value) ? value : null;
        };
        const x = number("x"), y = number("y"), zoom = number("zoom"), swipe = number("swipe");
        if (zoom !== null && zoom > 0) viewer.viewport.zoomTo(items.model.imageToViewportZoom(zoom), null, true);
        if (x !== null && y !== null) viewer.viewport.panTo(items.model.imageToViewportCoordinates(x, y), true);
        if (swipe !== null) {
            state.swipe = Math.min(100, Math.max(0, swipe)) / 100;
            swipePosition.value = String(Math.round(state.swipe * 100));
        }
        const mode = p.get("mode");
        const radio = document.querySelector("input[name=method][value='" + CSS.escape(mode || "") + "']");
        if (radio && mode !== state.mode) {
            radio.checked = true;
            setMode(mode);
        }
        updateClip();
        for (const o of overlays) {
            if (p.has(o.key) && !o.toggle.disabled && (p.get(o.key) === "1") !== o.toggle.checked) {
                o.toggle.checked = p.get(o.key) === "1";
                showOverlay(o);
            }
        }
    }

    function viewHash() {
        const item = items.model, viewport = viewer.viewport;
        const centre = item.viewportToImageCoordinates(viewport.getCenter(false));
        const p = new URLSearchParams();
        p.set("x", centre.x.toFixed(1));
        p.set("y", centre.y.toFixed(1));
        p.set("zoom", item.viewportToImageZoom(viewport.getZoom(false)).toPrecision(5));
        p.set("mode", state.mode);
        if (state.mode === "swipe") p.set("swipe", String(Math.round(state.swipe * 100)));
        for (const o of overlays) if (o.toggle.checked) p.set(o.key, "1");
        return "#" + p.toString();
    }

    let hashTimer = null;
    function writeHashSoon() {
        // at most one history entry rewrite every 250 ms, and always one after the last change
        if (!state.ready || hashTimer !== null) return;
        hashTimer = setTimeout(function () {
            hashTimer = null;
            // an address pasted since is not overwritten: its hashchange applies it first
            if (location.hash !== ownHash) return;
            const hash = viewHash();
            if (hash !== location.hash) history.replaceState(history.state, "", hash);
            ownHash = location.hash;
        }, 250);
    }
    viewer.addHandler("viewport-change", writeHashSoon);
    window.addEventListener("hashchange", function () {
        if (!state.ready) return;
        ownHash = location.hash; // an address with another view pasted into this page
        applyHash();
        writeHashSoon();
    });

    // --- scale bar -------------------------------------------------------------------------
    const bar = document.getElementById("scale-bar");
    function updateScaleBar() {
        // without mpp the page shows a note in place of the bar (drawn by the server)
        if (!mpp || !items.model) return;
        const zoom = items.model.viewportToImageZoom(viewer.viewport.getZoom(true)); // screen px per image px
        const micronsPerPixel = mpp[0] / zoom;
        let length = 1;
        const steps = [1, 2, 5];
        for (let k = -3; k < 7 && length / micronsPerPixel < 80; k++) {
            for (const s of steps) {
                length = s * Math.pow(10, k);
                if (length / micronsPerPixel >= 80) break;
            }
        }
        bar.style.width = Math.round(length / micronsPerPixel) + "px";
        bar.textContent = length >= 1000 ? length / 1000 + " mm" : (length < 1 ? length.toFixed(3) : length) + " \u00b5m";
    }
    viewer.addHandler("animation", updateScaleBar);
    viewer.addHandler("resize", updateScaleBar);
})();
