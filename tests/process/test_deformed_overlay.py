"""A deformable registration on the headset: the render node serves the case moved by its
field and both clients say DEFORMABLE over it (real nodes, real sockets, real Chromium).

The nav node restores a deformable registration file (the simulation's rigid truth plus a
4 mm push at the tumour), as after a restart: the render node builds the deformed case,
the reference client (``ornav headset``) and the browser page draw it and their banners
say DEFORMABLE; a rigid registration's do not (the other tests of the page and client).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.demo.sim_registration import SIM_T_REFERENCE_FROM_IMAGE
from nav.case import load_case
from nav.messages import DeformationField
from nav.navigation import Registration, case_id, surface_structure
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration_store import save_registration
from render.assets import load_glb
from tests.browser import ConsoleLog
from tests.conftest import REPO, NodeProcess, start_node
from tests.process.test_render_node import Stack, start_stack
from tests.process.test_web_bridge import _free_port, bridge_spec, wait_js

pytestmark = pytest.mark.slow

REGISTRATION_ID = 515151
PUSH_MM = np.array([0.0, 0.0, 4.0])


def write_deformable_registration(path: Path) -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    organ = surface_structure(case)
    n = len(case.targets)
    field = DeformationField(
        centres_image_mm=case.targets.points_lps[:1],  # the tumour centre
        coefficients_mm=PUSH_MM[None, :],
        widths_mm=np.array([40.0]),
        kernel_weights=np.array([1.0]),
    )
    registration = Registration(
        registration_id=REGISTRATION_ID,
        state="accepted",
        method="deformable",
        T_reference_from_image=SIM_T_REFERENCE_FROM_IMAGE,
        fre_mm=0.4,
        fiducial_errors_mm=np.full(100, 0.4),
        fle_mm=0.4,
        target_names=case.targets.labels,
        predicted_tre_mm=np.full(n, 1.5),
        true_tre_mm=np.full(n, np.nan),
        case_id=case_id(case),
        deformation=field,
        organ_confidence_mm=np.linspace(0.5, 3.5, len(organ.mesh.vertices)),
    )
    save_registration(path, registration, case_name=case.name, created_unix_s=time.time())


@pytest.fixture(scope="module")
def deformed() -> Iterator[tuple[Stack, NodeProcess, Path]]:
    if not (REPO / "render" / "web" / "node_modules" / "three").exists():
        pytest.skip("render/web/node_modules absent: `make setup` runs npm ci")
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-d-", dir="/tmp"))
    old = os.environ.get("ORNAV_KEYS")
    os.environ["ORNAV_KEYS"] = str(ipc_dir / "keys")
    write_deformable_registration(ipc_dir / "registration.json")
    stack = start_stack(ipc_dir, write_registration=False)
    bridge = start_node(bridge_spec(ipc_dir, _free_port()))
    yield stack, bridge, ipc_dir
    if bridge.process.poll() is None:
        bridge.process.kill()
    stack.stop()
    if old is None:
        os.environ.pop("ORNAV_KEYS", None)
    else:
        os.environ["ORNAV_KEYS"] = old
    shutil.rmtree(ipc_dir, ignore_errors=True)


def test_the_reference_client_draws_the_deformed_tumour_and_says_deformable(
    deformed: tuple[Stack, NodeProcess, Path], tmp_path: Path
) -> None:
    _, _, ipc_dir = deformed
    summary_path, cache = tmp_path / "summary.json", tmp_path / "cache"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "headset",
            "--connect",
            f"ipc://{ipc_dir}/render.headset",
            "--duration",
            "3",
            "--snapshot",
            str(tmp_path / "view.png"),
            "--summary",
            str(summary_path),
            "--renderer",
            "raycast",
            "--cache-dir",
            str(cache),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    banner = summary["snapshot"]["banner"]
    assert "DEFORMABLE" in banner and "VERIFY REGISTRATION" in banner, banner
    # The tumour it fetched is the case's moved by the field: 4 mm at its centre, along
    # the push turned into the image frame (the field is in the reference orientation).
    case = load_case(SHIPPED_PHANTOM_DIR)
    tumour = np.asarray(case.structure("tumor").mesh.vertices)
    centres = []
    for path in cache.iterdir():
        mesh = load_glb(path.read_bytes())
        if len(mesh.vertices) == len(tumour):
            centres.append(np.asarray(mesh.vertices).mean(axis=0))
    shift = [c - tumour.mean(axis=0) for c in centres]
    expected = SIM_T_REFERENCE_FROM_IMAGE[:3, :3].T @ PUSH_MM
    assert any(np.linalg.norm(s - expected) < 0.6 for s in shift), (shift, expected)


def test_the_page_says_deformable_over_the_deformed_case(
    chromium: Any, deformed: tuple[Stack, NodeProcess, Path]
) -> None:
    _, _, ipc_dir = deformed
    url = (ipc_dir / "monitor_url.txt").read_text().strip()
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 960, "height": 540})
    page = context.new_page()
    console = ConsoleLog()
    console.attach(page)
    try:
        page.goto(url)
        wait_js(page, "ornav.assetsLoaded >= 5 && ornav.overlay.state === 'CURRENT'", 60.0)
        text = wait_js(
            page,
            "document.getElementById('banner').textContent.includes('DEFORMABLE')"
            " && document.getElementById('banner').textContent",
            10.0,
        )
        assert "DEFORMABLE" in text
        assert not console.errors, console.errors
    finally:
        context.close()
