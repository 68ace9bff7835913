"""The numpy array type aliases of the project, in one place (trimesh keeps its own so).

Shapes and units are the caller's to state in its docstring; these only name the dtype.
``Mat4`` is a 4x4 rigid transform ``T_a_from_b`` (mm); ``Mat3`` a 3x3 rotation;
``Points`` (N, 3) mm; ``Quat`` (4,) as (w, x, y, z).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
UIntArray: TypeAlias = npt.NDArray[np.uint32]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Mat4: TypeAlias = npt.NDArray[np.float64]
Mat3: TypeAlias = npt.NDArray[np.float64]
Points: TypeAlias = npt.NDArray[np.float64]
Quat: TypeAlias = npt.NDArray[np.float64]
