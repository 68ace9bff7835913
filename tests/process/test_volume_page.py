"""The WebGL2 volume page (render/web/volume/) in real headless Chromium on a case built
from the shared CT: the meshes land on the CT where they are, no console errors."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli.case import view_handler
from nav.case import load_case
from tests.browser import ConsoleLog
from tests.conftest import REPO
from tests.ct_case import ct_case as built_ct_case

WEB = REPO / "render" / "web"
SCREENSHOTS = Path("/tmp/ornav-volume-page")


def serve(case_dir: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The page's server as ``ornav case view`` runs it, in a thread, on a free port."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), view_handler(WEB, case_dir.resolve())
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def ct_case() -> Path:
    return built_ct_case()


@pytest.fixture(scope="module")
def server(ct_case: Path) -> Iterator[str]:
    httpd, url = serve(ct_case)
    yield url
    httpd.shutdown()


def _open(chromium: object, url: str, console: ConsoleLog) -> object:
    page = chromium.new_page(viewport={"width": 800, "height": 600})  # type: ignore[attr-defined]
    console.attach(page)
    page.goto(url)
    page.wait_for_function("window.volumeReady === true || window.volumeError", timeout=120_000)
    error = page.evaluate("window.volumeError || null")
    assert error is None, error
    return page


def _pixel(png: bytes, x: float, y: float) -> np.ndarray:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return image[int(round(y)), int(round(x))] / 255.0


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_liver_centroid_pixel_has_the_liver_colour_on_the_ct(
    chromium: object, server: str, ct_case: Path
) -> None:
    console = ConsoleLog()
    page = _open(chromium, f"{server}/volume/index.html?case=/case/&preset=vessels", console)
    case = load_case(ct_case)
    liver = case.structure("liver")
    centroid = liver.mesh.center_mass
    # the anterior surface point in front of the centroid: what the camera sees there
    where = page.evaluate(f"window.volumeView.project({json.dumps(centroid.tolist())})")
    png = page.screenshot(path=str(SCREENSHOTS / "vessels.png"))
    colour = _pixel(png, where["x"], where["y"])
    others = {s.name: np.array(s.colour) for s in case.structures if s.name != "liver"}
    liver_similarity = _cosine(colour, np.array(liver.colour))
    assert liver_similarity > 0.98, (colour, liver.colour)
    assert all(liver_similarity > _cosine(colour, c) for c in others.values()), colour
    # the aorta lies behind the liver's left lobe from the front: with the liver hidden,
    # its centroid's pixel is the aorta's red (its lumen, ~180 HU, is below the window)
    page.evaluate(
        "window.volumeView.structures.get('liver').mesh.visible = false; window.volumeView.render()"
    )
    aorta = case.structure("aorta").mesh.center_mass
    where = page.evaluate(f"window.volumeView.project({json.dumps(aorta.tolist())})")
    png = page.screenshot(path=str(SCREENSHOTS / "vessels_no_liver.png"))
    aorta_colour = _pixel(png, where["x"], where["y"])
    assert aorta_colour[0] > 2 * max(aorta_colour[1], aorta_colour[2]), aorta_colour
    # the tool tip, 60 mm in front of the liver's centroid, is drawn there, over the CT
    tip = (centroid + [0.0, -60.0, 0.0]).tolist()
    page.evaluate(f"window.volumeView.setToolTip({json.dumps(tip)}); window.volumeView.render()")
    where = page.evaluate(f"window.volumeView.project({json.dumps(tip)})")
    png = page.screenshot(path=str(SCREENSHOTS / "tool_tip.png"))
    tip_colour = _pixel(png, where["x"], where["y"])
    assert _cosine(tip_colour, np.array([0.0, 0.9, 1.0])) > 0.95, tip_colour
    status = page.text_content("#status")
    assert "volume 256x256x20" in status
    assert console.errors == []
    page.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_presets_window_and_clipping_change_the_picture(chromium: object, server: str) -> None:
    """Soft tissue covers the liver (the abdominal wall in front); clipping the anterior
    half away shows it; the bone preset shows the spine; the volume off shows meshes only."""
    console = ConsoleLog()
    page = _open(chromium, f"{server}/volume/index.html?case=/case/", console)
    shots = {}
    shots["soft_tissue"] = page.screenshot(path=str(SCREENSHOTS / "soft_tissue.png"))
    page.evaluate("window.volumeView.setClip([0, 0.5, 0], [1, 1, 1]); window.volumeView.render()")
    shots["clipped"] = page.screenshot(path=str(SCREENSHOTS / "soft_tissue_clipped.png"))
    page.evaluate(
        "window.volumeView.setClip([0, 0, 0], [1, 1, 1]); window.volumeView.setPreset('bone');"
        "window.volumeView.render()"
    )
    shots["bone"] = page.screenshot(path=str(SCREENSHOTS / "bone.png"))
    page.evaluate("window.volumeView.setVolumeVisible(false); window.volumeView.render()")
    shots["meshes"] = page.screenshot(path=str(SCREENSHOTS / "meshes_only.png"))
    from PIL import Image

    arrays = {
        k: np.asarray(Image.open(io.BytesIO(v)).convert("RGB"), float) for k, v in shots.items()
    }
    for a, b in (("soft_tissue", "clipped"), ("soft_tissue", "bone"), ("bone", "meshes")):
        assert np.abs(arrays[a] - arrays[b]).mean() > 2.0, (a, b)
    frame_ms = page.evaluate("window.volumeView.measureFrameMs(3)")
    assert frame_ms > 0
    assert console.errors == []
    page.close()


def test_the_page_and_the_offscreen_renderer_share_their_presets() -> None:
    """The transfer functions in volume.js are render/volume_render.py's, number for number."""
    import re

    from render.volume_render import PRESETS

    source = (WEB / "volume" / "volume.js").read_text()
    block = source[
        source.index("export const PRESETS = {") : source.index(
            "};", source.index("export const PRESETS")
        )
    ]
    for name, (level, width, points) in PRESETS.items():
        match = re.search(
            name + r": \{\s*level: ([-\d.]+), width: ([-\d.]+),\s*points: (\[.*?\]),\s*\}",
            block,
            re.S,
        )
        assert match, name
        assert (float(match.group(1)), float(match.group(2))) == (level, width)
        np.testing.assert_allclose(json.loads(match.group(3)), points)


def test_a_case_without_a_volume_shows_its_meshes(chromium: object, tmp_path: Path) -> None:
    """The shipped phantom has no CT: the page draws its meshes, the organ where it is."""
    from nav.phantom import write_phantom_case

    write_phantom_case(tmp_path)
    httpd, url = serve(tmp_path)
    try:
        console = ConsoleLog()
        page = _open(chromium, f"{url}/volume/index.html?case=/case/", console)
        assert "volume none" in page.text_content("#status")
        case = load_case(tmp_path)
        organ = next(s for s in case.structures if s.role == "organ")
        where = page.evaluate(
            f"window.volumeView.project({json.dumps(organ.mesh.center_mass.tolist())})"
        )
        colour = _pixel(page.screenshot(), where["x"], where["y"])
        assert _cosine(colour, np.array(organ.colour)) > 0.98, colour
        assert console.errors == []
        page.close()
    finally:
        httpd.shutdown()


def test_a_bundle_whose_brick_does_not_match_its_hash_is_an_error_on_the_page(
    chromium: object, tmp_path: Path
) -> None:
    """A case bundle with a tampered brick: the page says so, and renders no volume."""
    import gzip
    import hashlib

    from nav.phantom import write_phantom_case

    write_phantom_case(tmp_path)
    data = gzip.compress(np.zeros(8, "<u2").tobytes())
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "v.u16.gz").write_bytes(gzip.compress(np.ones(8, "<u2").tobytes()))
    toml = (tmp_path / "case.toml").read_text()
    table = (
        f'\n[volume]\nfile = "volume/v.u16.gz"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'shape = [2, 2, 2]\ndtype = "uint16"\nhu_offset = -1024.0\n'
        "T_image_from_ijk = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0]\n"
    )
    head, sep, rest = toml.partition("[[structures]]")
    (tmp_path / "case.toml").write_text(head + table + "\n" + sep + rest)
    httpd, url = serve(tmp_path)
    try:
        page = chromium.new_page()  # type: ignore[attr-defined]
        console = ConsoleLog()
        console.attach(page)
        page.goto(f"{url}/volume/index.html?case=/case/")
        page.wait_for_function("window.volumeReady === true || window.volumeError", timeout=60_000)
        assert "sha256" in page.evaluate("window.volumeError")
        assert "sha256" in page.text_content("#status")
        page.close()
    finally:
        httpd.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ornav_case_view_serves_the_page_for_a_case(chromium: object, ct_case: Path) -> None:
    """``ornav case view CASE --port 0`` prints the page's URL; the page loads the case."""
    import sys

    from nav.runtime.process import ChildProcess

    child = ChildProcess(
        name="case-view",
        argv=[sys.executable, "-m", "cli.main", "case", "view", str(ct_case), "--port", "0"],
        env=None,
        cwd=REPO,
        stdout="pipe",
        stderr=None,
        sigint_timeout_s=5.0,
        sigterm_timeout_s=5.0,
    )
    child.start()
    try:
        url = child.wait_ready("http://", 60.0).strip()
        console = ConsoleLog()
        page = _open(chromium, url, console)
        assert "volume 256x256x20" in page.text_content("#status")
        assert console.errors == []
        page.close()
    finally:
        code = child.stop()
    assert code == 0  # Ctrl-C (SIGINT) is a clean stop
