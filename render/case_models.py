"""Which models a render node serves: one case's assets, coloured by the registration's confidence.

No sockets and no clock reads; it reads the case folder again when a registration of
another case arrives (the nav node ran ``case.load``). :class:`CaseModels` takes every
``RegistrationResult`` and says when the asset set to serve changed:

- Case: the node draws the models of the case it loaded from ``case_path``, and a
  registration carries the id of the case it registers (``nav.navigation.case_id``). An
  active registration of another case makes it load ``case_path`` again, once per
  registration: if the folder now holds that case, its assets replace the old ones
  (counter ``case_reloads``); if not, nothing changes and the overlay stays hidden under
  that registration (``render.scene``: CASE_MISMATCH, counter ``case_mismatches``). One
  that names no case (recorded before case ids) is logged once.
- Confidence colours: a new accepted or restored point registration of this case colours
  the organ's asset per vertex by its predicted TRE (``image`` frame):
  :func:`nav.registration.confidence.rigid_confidence_mm`, eq. 46 with the FLE and the
  fiducials (by label, any subset) the registration carries, so the colours and the TRE
  figure are one computation (counter ``confidence_assets_built``). A surface
  registration colours the organ by the error field it carries; one that does not carry
  its facts (a recording made before they were sent) restores the plain colours and logs
  why. ~4 ms on the phantom's liver (2562 vertices, 8 fiducials), once per registration,
  off the per-sample path.
- Deformed case: a deformable registration rebuilds every structure from its field, the
  organ in its posterior colours (``render.registered_assets``; counter
  ``deformed_assets_built``). A field it cannot draw (not the organ's size, bad values)
  makes ``undrawable_id`` that registration: the scene hides the overlay under it
  (MODELS_UNAVAILABLE, counter ``deformed_assets_refused``), never the undeformed models
  under a deformable pose. It is built in the render node's step that takes the
  registration, before any scene update under it goes out, so a nav state under it is
  never drawn with the models of the registration before.

The new hashes give a new ``scene_version`` (:func:`render.assets.scene_version`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from nav.arrays import FloatArray
from nav.case import Case, CaseError, load_case
from nav.messages import RegistrationResult
from nav.navigation import ACTIVE_STATES, case_id
from nav.registration.confidence import rigid_confidence_mm
from render.assets import AssetSet, build_assets, scene_version, with_confidence
from render.registered_assets import deformed_assets, surface_error_assets

log = logging.getLogger(__name__)


class CaseModels:
    """The asset set to serve (``served``, scene ``version``) for the newest registration.

    ``assets``: the plain assets built from ``case`` (``triangle_budget`` per structure),
    as the node serves them at start. ``counters``: the node's heartbeat counters.
    """

    def __init__(
        self,
        case: Case,
        assets: AssetSet,
        *,
        case_path: str | Path,
        triangle_budget: int,
        counters: Counter[str],
    ) -> None:
        self.case_path = case_path
        self.budget = triangle_budget
        self.counters = counters
        self._use(case, assets)
        self.served = assets
        self.version = scene_version(assets)
        self._checked_id = 0  # the last registration whose case was checked
        self.undrawable_id = 0  # the last registration whose models could not be built

    def _use(self, case: Case, plain: AssetSet) -> None:
        self.case = case
        self.case_id = case_id(case)
        self.plain = plain
        self.organ = next((s for s in case.structures if s.role == "organ"), None)
        self._coloured_id: int | None = None  # the registration the colours are for

    def on_registration(self, result: RegistrationResult) -> bool:
        """Take a registration event; True when ``served`` changed (then ``version``,
        ``case_id`` and ``served.names`` are what to draw from now on)."""
        reloaded = self._follow_case(result)
        if reloaded:
            self.served, self.version = self.plain, scene_version(self.plain)
        assets = self._confidence(result)
        if assets is None or assets is self.served:
            return reloaded
        self.served, self.version = assets, scene_version(assets)
        if assets is not self.plain:
            self.counters["confidence_assets_built"] += 1
        return True

    @property
    def coloured(self) -> bool:
        """Whether ``served`` carries confidence colours (else the plain case colours)."""
        return self.served is not self.plain

    def _follow_case(self, result: RegistrationResult) -> bool:
        """Load ``case_path`` again for an active registration of another case; True if
        it now holds that case (its plain assets are in use), else say once why not."""
        if result.state not in ACTIVE_STATES or result.case_id == self.case_id:
            return False
        if result.registration_id == self._checked_id:
            return False  # republished: checked already
        self._checked_id = result.registration_id
        if not result.case_id:
            log.warning(
                "registration %d names no case (recorded before case ids): overlay hidden under it",
                result.registration_id,
            )
            return False
        try:
            new_case = load_case(self.case_path)
            new_id = case_id(new_case)
            new_assets = (
                build_assets(new_case, triangle_budget=self.budget)
                if new_id == result.case_id
                else None
            )
        except (CaseError, ValueError) as error:
            new_id, new_assets = f"unreadable ({error})", None
        if new_assets is None:
            self.counters["case_mismatches"] += 1
            log.warning(
                "registration %d is of case id %s, the models here are of case %r "
                "(id %s) and %s holds %s: overlay hidden under it",
                result.registration_id,
                result.case_id[:12],
                self.case.name,
                self.case_id[:12],
                self.case_path,
                new_id[:12] if len(new_id) == 64 else new_id,
            )
            return False
        self._use(new_case, new_assets)
        self.counters["case_reloads"] += 1
        log.info(
            "case %r (id %s) reloaded from %s for registration %d",
            new_case.name,
            new_id[:12],
            self.case_path,
            result.registration_id,
        )
        return True

    def _confidence(self, result: RegistrationResult) -> AssetSet | None:
        """The asset set for ``result``, or None when nothing changes.

        Points: the organ coloured by :func:`rigid_confidence_mm` with the registration's
        own FLE and fiducials. Surface: the organ coloured by the error field it carries.
        Deformable: every structure moved by its field, the organ in its posterior colours
        (``render.registered_assets``). Without those facts (a recording made before they
        were sent, a field that does not fit the organ): the plain colours, logged; for a
        deformable registration that is an error, and ``undrawable_id`` names it (the
        scene hides the overlay under it). A registration of another case changes nothing
        here (its overlay is hidden).
        """
        if result.state not in ACTIVE_STATES or self.organ is None:
            return None
        if result.case_id != self.case_id:
            return None  # not this case's: nothing is drawn under it
        if result.registration_id == self._coloured_id:
            return None  # republished, or restored -> accepted: same field
        self._coloured_id = result.registration_id
        if result.method in ("surface", "deformable"):
            return self._registered(result)
        if result.method != "points":
            return self.plain
        fiducials = self.case.fiducials

        def error_field(vertices: FloatArray) -> FloatArray:
            return rigid_confidence_mm(
                vertices,
                fiducial_labels=result.fiducial_labels,
                fle_mm=result.fle_mm,
                case_fiducials=fiducials,
            )

        try:
            error_field(np.zeros((1, 3)))  # checks the facts and the geometry before building
        except ValueError as error:  # RegistrationError too
            log.warning(
                "registration %d: plain colours, no confidence field: %s",
                result.registration_id,
                error,
            )
            return self.plain
        return with_confidence(self.plain, self.organ, error_field, triangle_budget=self.budget)

    def _registered(self, result: RegistrationResult) -> AssetSet:
        """The surface method's error colours, or the deformable method's deformed case."""
        assert self.organ is not None
        try:
            if result.method == "deformable":
                assets = deformed_assets(self.case, self.plain, result, triangle_budget=self.budget)
                self.counters["deformed_assets_built"] += 1
                return assets
            if len(result.organ_confidence_mm):
                return surface_error_assets(
                    self.plain, self.organ, result, triangle_budget=self.budget
                )
            why = "it carries no error field (recorded before it was sent)"
        except ValueError as error:
            why = str(error)
        if result.method == "deformable":
            self.undrawable_id = result.registration_id
            self.counters["deformed_assets_refused"] += 1
        log.log(
            logging.ERROR if result.method == "deformable" else logging.WARNING,
            "registration %d (%s): plain models, no %s: %s",
            result.registration_id,
            result.method,
            "deformed case" if result.method == "deformable" else "error colours",
            why,
        )
        return self.plain
