"""``ornav case build``: a case bundle from a CT and its segmentation.

- :mod:`nav.case_build.mesh`: one label to a closed mesh in LPS mm (marching cubes, Taubin
  smoothing, quadric decimation to a triangle budget) with its checks against the voxels;
- :mod:`nav.case_build.lesion`: lesions and targets by coordinates or as spheres;
- :mod:`nav.case_build.landmarks`: fiducials placed on a structure's surface;
- :mod:`nav.case_build.build`: the whole build, written atomically (a temporary folder
  renamed into place, never a half bundle).
"""
