"""Medical image readers and geometry: every image to one frame, ``image`` (LPS, mm).

A CT or a segmentation is a :class:`nav.imaging.volume.Volume`: a voxel array indexed
``[i, j, k]`` and ``T_image_from_ijk``, the 4x4 affine from voxel indices to LPS mm (the
centre of voxel ``(i, j, k)`` is at ``T_image_from_ijk @ [i, j, k, 1]``).

- :mod:`nav.imaging.dicom`: a DICOM series (pydicom), sorted along the slice normal, spacing
  from the positions;
- :mod:`nav.imaging.nifti`: NIfTI-1/2 (nibabel), sform or qform, RAS converted to LPS;
- :mod:`nav.imaging.nrrd`: NRRD and 3D Slicer ``.seg.nrrd`` (pynrrd), space directions;
- :mod:`nav.imaging.geometry`: orientation, grids, putting a segmentation on an image's grid.

:func:`nav.imaging.read.read_volume` picks the reader from the path.
"""
