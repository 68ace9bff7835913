"""The closed vocabulary of coordinate frames.

A transform is named ``T_<to>_from_<from>`` (see ``nav.transforms``) and
every ``<to>``/``<from>`` must be a name that :func:`is_valid_frame` accepts:
one of the fixed frames below, or a tool frame. Lengths are millimetres in
every frame.

Tool frames follow one rule: each tracked marker is its own frame, named by
its tool name (``pointer``, ``needle``, ``us_probe``), and ``<tool>_tip`` is
the frame at that tool's tip once pivot calibration has found it. A tool name
is lowercase letters, digits and underscores, starts with a letter, is at most
32 characters, and does not itself end in ``_tip`` (so ``x_tip`` always means
"the tip of tool x"). The patient reference and the headset are tracked
markers too; their frames are the fixed names ``reference`` and ``headset``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

TRACKER: Final = "tracker"
REFERENCE: Final = "reference"
IMAGE: Final = "image"
HEADSET: Final = "headset"
DISPLAY: Final = "display"
CAMERA: Final = "camera"

FRAME_MEANINGS: Final[Mapping[str, str]] = MappingProxyType(
    {
        TRACKER: "the tracker's measurement frame; raw poses arrive as T_tracker_from_<tool>",
        REFERENCE: "the patient reference marker, fixed to the patient; the model is pinned here",
        IMAGE: "the preop case's own coordinates as stored in the case: LPS, mm",
        HEADSET: "the headset's tracked marker (what the tracker sees on the headset)",
        DISPLAY: "the headset's own world frame, in which it renders the overlay",
        CAMERA: "a camera's optical frame, OpenCV convention: x right, y down, z forward",
    }
)
"""Each fixed frame and its meaning, one line each."""

FIXED_FRAMES: Final[frozenset[str]] = frozenset(FRAME_MEANINGS)

TIP_SUFFIX: Final = "_tip"

# \A and \Z rather than ^ and $: $ also matches before a trailing newline.
TOOL_NAME_PATTERN: Final[re.Pattern[str]] = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
"""A tool (tracked marker) name: lowercase letters, digits, ``_``; a letter first; <= 32 chars."""


def is_valid_tool_name(name: str) -> bool:
    """Return True if ``name`` may name a tracked tool marker.

    Besides matching :data:`TOOL_NAME_PATTERN`, a tool name must not end in
    ``_tip``: ``pointer_tip`` is reserved for the tip frame of ``pointer``.
    """
    return TOOL_NAME_PATTERN.match(name) is not None and not name.endswith(TIP_SUFFIX)


def tip_frame(tool: str) -> str:
    """Return the tip frame name of ``tool``, e.g. ``pointer`` -> ``pointer_tip``.

    Raises ValueError if ``tool`` is not a valid tool name.
    """
    if not is_valid_tool_name(tool):
        raise ValueError(f"invalid tool name {tool!r}: expected {TOOL_NAME_PATTERN.pattern}")
    return tool + TIP_SUFFIX


def is_valid_frame(name: str) -> bool:
    """Return True for a fixed frame, a valid tool name, or a valid tool name + ``_tip``."""
    if name in FIXED_FRAMES or is_valid_tool_name(name):
        return True
    if name.endswith(TIP_SUFFIX):
        return is_valid_tool_name(name[: -len(TIP_SUFFIX)])
    return False
