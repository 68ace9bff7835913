"""``ornav case build`` and volume rendering, next to their plain references, same run.

    .venv/bin/python bench/case_build.py [--json out.json] [--no-page] [--device cpu|cuda]

1. Case build on the shared DICOM CT (20 x 512 x 512) and its segmentation: the whole
   build (read, align, mesh four structures, lesion, brick, write, load back) and, per
   structure, ``nav.case_build.mesh.mesh_structure`` (components, marching cubes,
   Taubin, decimation, volume restored, Hausdorff check) against plain scikit-image
   ``marching_cubes`` on the same mask: time and triangles.
2. Offscreen volume rendering (``render.volume_render``, torch) of the built case at
   640 x 480 with its meshes, per preset, against the meshes alone (Open3D ray casting,
   the same camera): seconds per frame.
3. The WebGL2 page (``render/web/volume/``) in headless Chromium (SwiftShader here, a
   CPU: a headset's GPU is far faster): milliseconds per frame with the volume, per preset,
   against the page with the volume hidden (meshes only).

Nothing here asserts a timing. Needs ../shared/data/totalsegmentator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nav.case import bounds_lps, load_case  # noqa: E402
from nav.case_build.build import (  # noqa: E402
    BuildSpec,
    build_case,
    parse_structures,
    read_label_names,
)
from nav.case_build.lesion import LesionSpec  # noqa: E402
from nav.case_build.mesh import mesh_structure  # noqa: E402
from nav.imaging.geometry import align_labels  # noqa: E402
from nav.imaging.read import read_volume  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "totalsegmentator"
STRUCTURES = "liver,portal_vein_and_splenic_vein,inferior_vena_cava,aorta"


def _say(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def bench_build(out_root: Path) -> dict[str, Any]:
    names = read_label_names(DATA / "labels.json")
    structures = parse_structures(STRUCTURES, names)
    spec = BuildSpec(
        image=DATA / "example_ct_dicom",
        labels=DATA / "example_seg_dicom.nii.gz",
        structures=structures,
        out=out_root / "ct_case",
        lesions=(LesionSpec.parse("lesion=inside:liver:12"),),
    )
    _say("case build")
    start = time.perf_counter()
    result = build_case(spec, progress=lambda _: None)
    build_s = time.perf_counter() - start

    from skimage.measure import marching_cubes

    ct = read_volume(spec.image)
    labels, _ = align_labels(read_volume(spec.labels, labels=True), ct)
    rows = {}
    for s in structures:
        mask = labels.array == s.label
        start = time.perf_counter()
        marching_cubes(np.pad(mask, 1).astype(np.float32), level=0.5)
        raw_s = time.perf_counter() - start
        _, raw_faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), level=0.5)
        start = time.perf_counter()
        report = mesh_structure(mask, ct.T_image_from_ijk, keep_all=s.role == "vessel")
        ours_s = time.perf_counter() - start
        rows[s.name] = {
            "voxels": int(mask.sum()),
            "skimage_s": raw_s,
            "skimage_triangles": len(raw_faces),
            "ornav_s": ours_s,
            "ornav_triangles": len(report.mesh.faces),
            "ratio_time": ours_s / raw_s,
            "volume_error_pct": 100 * (report.volume_ratio - 1),
            "smoothed_volume_error_pct": 100
            * (report.smoothed_volume_mm3 / report.voxel_volume_mm3 - 1),
            "hausdorff_mm": report.hausdorff_mm,
            "boundary_p95_mm": report.boundary_p95_mm,
        }
    size = sum(p.stat().st_size for p in spec.out.rglob("*") if p.is_file())
    return {"build_s": build_s, "bundle_bytes": size, "structures": rows, "out": str(result.out)}


def bench_render(case_dir: Path, device: str, repeats: int = 2) -> dict[str, Any]:
    from render.volume_render import anterior_camera, render, resolve_device

    case = load_case(case_dir)
    assert case.volume is not None
    values = case.volume.read().astype(np.float32) + case.volume.hu_offset
    camera = anterior_camera(bounds_lps(case), width=640, height=480)
    meshes = [(s.mesh, s.colour) for s in case.structures]
    out: dict[str, Any] = {"device": str(resolve_device(device)), "size": "640x480"}

    def timed(**kwargs: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            render(camera=camera, meshes=meshes, device=device, **kwargs)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    _say("offscreen render: meshes alone")
    out["meshes_only_s"] = timed(volume_hu=None, T_image_from_ijk=None)
    for preset in ("soft_tissue", "vessels", "bone"):
        _say(f"offscreen render: {preset}")
        out[f"{preset}_s"] = timed(
            volume_hu=values, T_image_from_ijk=case.volume.T_image_from_ijk, preset=preset
        )
    return out


def bench_page(case_dir: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO))
    from tests.browser import CHROMIUM_ARGS, chromium_path
    from tests.process.test_volume_page import serve

    httpd, url = serve(case_dir)
    out: dict[str, Any] = {"renderer": "headless Chromium, SwiftShader (CPU)", "size": "800x600"}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), args=list(CHROMIUM_ARGS)
            )
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(f"{url}/volume/index.html?case=/case/")
            page.wait_for_function("window.volumeReady === true", timeout=120_000)
            for preset in ("soft_tissue", "vessels", "bone"):
                _say(f"page: {preset}")
                page.evaluate(f"window.volumeView.setPreset('{preset}')")
                out[f"{preset}_ms"] = page.evaluate("window.volumeView.measureFrameMs(5)")
            _say("page: meshes only")
            page.evaluate("window.volumeView.setVolumeVisible(false)")
            out["meshes_only_ms"] = page.evaluate("window.volumeView.measureFrameMs(5)")
            browser.close()
    finally:
        httpd.shutdown()
    return out


def report(results: dict[str, Any]) -> str:
    lines = ["", "case build on the shared DICOM CT (512 x 512 x 20) + segmentation"]
    b = results["build"]
    lines.append(f"  whole build: {b['build_s']:.1f} s, bundle {b['bundle_bytes'] / 1e6:.2f} MB")
    lines.append(
        f"  {'structure':30} {'voxels':>8} {'skimage s':>9} {'tris':>7} {'ornav s':>8} "
        f"{'tris':>6} {'x time':>7} {'vol %':>6} {'smooth %':>8} {'H mm':>5} {'p95':>5}"
    )
    for name, r in b["structures"].items():
        lines.append(
            f"  {name:30} {r['voxels']:8d} {r['skimage_s']:9.3f} {r['skimage_triangles']:7d} "
            f"{r['ornav_s']:8.3f} {r['ornav_triangles']:6d} {r['ratio_time']:7.1f} "
            f"{r['volume_error_pct']:+6.2f} {r['smoothed_volume_error_pct']:+8.2f} "
            f"{r['hausdorff_mm']:5.2f} {r['boundary_p95_mm']:5.2f}"
        )
    if "render" in results:
        r = results["render"]
        lines.append("")
        lines.append(f"offscreen torch render {r['size']} on {r['device']} (s per frame)")
        base = r["meshes_only_s"]
        lines.append(f"  meshes alone (reference): {base:.2f} s")
        for preset in ("soft_tissue", "vessels", "bone"):
            value = r[f"{preset}_s"]
            lines.append(f"  {preset:12} {value:.2f} s  ({value / base:.1f} x meshes alone)")
    if "page" in results:
        p = results["page"]
        lines.append("")
        lines.append(f"WebGL2 page {p['size']}, {p['renderer']} (ms per frame)")
        base = p["meshes_only_ms"]
        lines.append(f"  meshes only (reference): {base:.1f} ms")
        for preset in ("soft_tissue", "vessels", "bone"):
            value = p[f"{preset}_ms"]
            lines.append(f"  {preset:12} {value:.1f} ms  ({value / base:.1f} x meshes only)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--no-page", action="store_true", help="skip the browser page")
    parser.add_argument("--no-render", action="store_true", help="skip the torch render")
    parser.add_argument("--device", default="auto", help="torch device (default: auto)")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no shared data at {DATA}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["build"] = bench_build(Path(tmp))
        case_dir = Path(results["build"]["out"])
        if not args.no_render:
            results["render"] = bench_render(case_dir, args.device)
        if not args.no_page:
            results["page"] = bench_page(case_dir)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
