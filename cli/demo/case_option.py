"""``ornav demo --case CASE``: the demo's stack on another case bundle (e.g. one built by
``ornav case build`` from a CT).

The nav and render nodes (and any node that already takes a ``case`` parameter) are given
the case folder. The simulation's truth, where the model sits on the patient reference
(``truth_T_reference_from_image`` of the nav node), is shifted so the new case's centre
lands where the launch file's case's centre did: the sim's patient stays in the tracker's
working volume whatever the CT's own coordinates (the shared CT lies near S = -785 mm).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from cli.demo.script import MIN_FIDUCIALS
from cli.errors import UserError
from nav.case import Case, CaseError, bounds_lps, load_case
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime.launchfile import LaunchSpec

log = logging.getLogger("ornav.demo")

CASE_NODE_MODULES = ("nav.nav_node", "render.render_node")


def _load(path: str | Path) -> Case:
    try:
        return load_case(path)
    except CaseError as error:
        raise UserError(str(error)) from None


def _centre(case: Case) -> np.ndarray:
    lo, hi = bounds_lps(case)
    return np.asarray((lo + hi) / 2, dtype=np.float64)


def with_case(launch: LaunchSpec, case_dir: str | Path) -> LaunchSpec:
    """``launch`` with its case replaced by ``case_dir`` (see the module doc); UserError for
    a case that does not load or that the demo cannot drive (too few fiducials, no target).
    """
    case_dir = Path(case_dir).resolve()
    case = _load(case_dir)
    if len(case.fiducials) < MIN_FIDUCIALS:
        raise UserError(
            f"{case_dir}: {len(case.fiducials)} fiducials; the demo registers with at least "
            f"{MIN_FIDUCIALS}"
        )
    if len(case.targets) == 0:
        raise UserError(
            f"{case_dir}: no targets; the demo approaches one (case build --lesion adds one)"
        )
    nav = next((s for s in launch.nodes if s.module == "nav.nav_node"), None)
    if nav is None:
        raise UserError(f"{launch.path}: the demo needs a nav.nav_node node; none found")
    before = _load(nav.params.get("case") or SHIPPED_PHANTOM_DIR)
    truth = nav.params.get("truth_T_reference_from_image")
    nodes = []
    for spec in launch.nodes:
        params = dict(spec.params)
        if spec.module in CASE_NODE_MODULES or "case" in params:
            params["case"] = str(case_dir)
        if spec is nav and isinstance(truth, list) and len(truth) == 16:
            T = np.reshape(np.array(truth, dtype=np.float64), (4, 4))
            shift = np.eye(4)
            shift[:3, 3] = _centre(before) - _centre(case)
            params["truth_T_reference_from_image"] = [float(v) for v in (T @ shift).ravel()]
        nodes.append(replace(spec, params=params))
    _say_what_the_case_is(case)
    return replace(launch, nodes=tuple(nodes))


def _say_what_the_case_is(case: Case) -> None:
    structures = ", ".join(f"{s.name} ({s.role})" for s in case.structures)
    log.info("case %r from %s: %s", case.name, case.root, structures)
    try:
        provenance = tomllib.loads((case.root / "case.toml").read_text(encoding="utf-8")).get(
            "provenance", {}
        )
    except (OSError, tomllib.TOMLDecodeError):
        provenance = {}
    lesions = provenance.get("lesions", "") if isinstance(provenance, dict) else ""
    if "demonstration" in str(lesions):
        log.info(
            "target %r is a demonstration lesion that case build placed inside an organ: "
            "these images hold no tumour (%s)",
            case.targets.labels[0],
            lesions,
        )
