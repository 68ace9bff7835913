"""The page-test runtime itself: Chromium starts, WebGL2 draws on SwiftShader, and the
JavaScript dependencies from the lockfile are where pages import them from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import ConsoleLog

WEB = Path(__file__).resolve().parents[2] / "render" / "web"


def test_chromium_draws_webgl2_and_reports_its_console(chromium: object) -> None:
    page = chromium.new_page()  # type: ignore[attr-defined]
    log = ConsoleLog()
    log.attach(page)
    page.set_content(
        "<canvas id=c width=8 height=8></canvas><script>"
        "const canvas = document.getElementById('c');"
        "const gl = canvas.getContext('webgl2', {preserveDrawingBuffer: true});"
        "gl.clearColor(1, 0, 0, 1); gl.clear(gl.COLOR_BUFFER_BIT);"
        "const px = new Uint8Array(4); gl.readPixels(4, 4, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);"
        "window.pixel = Array.from(px); console.error('seen');"
        "</script>"
    )
    assert page.evaluate("window.pixel") == [255, 0, 0, 255]
    assert log.errors == ["error: seen"]
    page.close()


@pytest.mark.parametrize("module", ["three/build/three.module.js", "iwer/build/iwer.module.js"])
def test_lockfile_dependencies_are_installed(module: str) -> None:
    if not (WEB / "node_modules").exists():
        pytest.skip("render/web/node_modules absent: `make setup` runs npm ci")
    assert (WEB / "node_modules" / module).stat().st_size > 100_000
