"""Reading MRI volumes and putting them in a canonical orientation.

Everything that touches files goes through :func:`read_image`, so every reader
error becomes a :class:`VolumeError` whose one-line message names the file.

Canonical orientation is a pure permutation/flip of voxel axes (SimpleITK's
``DICOMOrient``), never a resampling, so it is exactly invertible: the voxel
values of the canonical volume are the original ones, only reordered. Index
axes are ITK's (x, y, z); numpy arrays from SimpleITK are (z, y, x).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg_d2.data.io.metaimage import missing_data_file
from brainseg_d2.data.io.nifti import NiftiError, read_nifti, sform_gap

logger = logging.getLogger(__name__)

#: File name endings SimpleITK reads that the source finders look for.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


class VolumeError(ValueError):
    """A volume cannot be used: unreadable, wrong shape, bad values, geometry mismatch."""


def _first_line(message: str, path: Path) -> str:
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    # ITK messages start with a file/line banner; the last line says what went wrong.
    line = lines[-1] if lines else "unknown error"
    if "No such file or directory" in line and path.exists():
        # ITK appends a stale errno to a read that stopped short of the data.
        return "its data is truncated or corrupt"
    return line.replace(f'"{path}"', "it").replace(str(path), "it")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VolumeError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        # ITK would say "Unable to determine ImageIO reader", which hides the cause.
        raise VolumeError(f"{path}: empty file (0 bytes)")
    if (data := missing_data_file(path)) is not None:
        raise VolumeError(f"{path}: its data file {data} does not exist")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read one 3D scalar volume.

    Args:
        path: a file SimpleITK reads (.nii, .nii.gz, .mha, .mhd, .nrrd, ...) or a
            folder holding one DICOM series (read with ``ImageSeriesReader``).

    Returns:
        the image, 3D, one component per voxel.

    Raises:
        VolumeError: missing, corrupt or truncated file; not 3D (e.g. 4D);
            vector pixels; NaN or Inf voxels; a sheared grid (its direction
            matrix is not orthonormal, e.g. a gantry tilt), which NIfTI outputs
            cannot hold. The message names the file.

    A NIfTI file whose sform places the volume elsewhere than the geometry read
    (ITK's choice between sform and qform) is read with a warning that says by
    how much: tools that read the sform (nibabel, FSL) would disagree.
    """
    path = Path(path)
    _check_exists(path)
    reader = None
    if not path.is_dir() and path.name.lower().endswith((".nii", ".nii.gz")):
        reader = read_header(path)
        if reader.GetDimension() != 3:
            raise VolumeError(
                f"{path}: expected a 3D volume, got {reader.GetDimension()}D of size "
                f"{reader.GetSize()}"
            )
    image, checked = _read(path, reader)
    if image.GetDimension() != 3:
        raise VolumeError(
            f"{path}: expected a 3D volume, got {image.GetDimension()}D of size {image.GetSize()}"
        )
    _check_grid(image, path)
    if reader is not None:
        _warn_sform_disagrees(image, reader, path)
    return image if checked else _check_finite(image, path)


def _read(path: Path, nifti_header: sitk.ImageFileReader | None) -> tuple[sitk.Image, bool]:
    """Read a file or DICOM folder (a NIfTI file through :func:`read_nifti` when its header
    is given). Returns the image and whether its voxels were checked for NaN/Inf."""
    try:
        if path.is_dir():
            return _read_dicom_series(path), False
        if nifti_header is not None:
            return read_nifti(path, nifti_header)
        return sitk.ReadImage(str(path)), False
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read ({_first_line(str(exc), path)})") from None
    except NiftiError as exc:
        raise VolumeError(str(exc)) from None


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> list[sitk.Image]:
    """Read 3D volumes of one 4D file (once), each with the file's grid in space.

    ``indices`` are volumes along the fourth axis (0-based); one 3D scalar image is
    returned for each, in that order.

    Raises:
        VolumeError: what :func:`read_image` refuses, a file that is not 4D, or an
            index past its last volume (the message names the file).
    """
    path = Path(path)
    reader = read_header(path)
    count = check_frames(reader, path, indices)
    nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    image, checked = _read(path, reader if nifti else None)
    if image.GetDimension() != 4 or image.GetSize()[3] != count:  # what the header said
        raise VolumeError(f"{path}: expected a 4D image, got size {image.GetSize()}")
    size = [*image.GetSize()[:3], 0]
    frames = [sitk.Extract(image, size, [0, 0, 0, int(i)]) for i in indices]
    for frame in frames:
        _check_grid(frame, path)
        if not checked:
            _check_finite(frame, path)
    if frames and nifti:
        _warn_sform_disagrees(frames[0], reader, path)
    return frames


def check_frames(
    header: sitk.ImageFileReader, path: str | os.PathLike, indices: Sequence[int],
    total: int | None = None,
) -> int:  # fmt: skip
    """The number of volumes of a 4D file, checked to hold every index in ``indices``
    (and to be ``total``, the sequences named for it, when given).

    Raises:
        VolumeError: the file is not 4D, an index is out of range, or another count.
    """
    if header.GetDimension() != 4:
        raise VolumeError(
            f"{path}: expected a 4D image (one volume per sequence), got "
            f"{header.GetDimension()}D of size {header.GetSize()}"
        )
    count = header.GetSize()[3]
    for index in indices:
        if not 0 <= index < count:
            raise VolumeError(f"{path}: holds {count} volumes, so it has no volume {index}")
    if total is not None and count != total:
        raise VolumeError(f"{path}: holds {count} volumes, but {total} sequences are named "
                          "for it (one per volume)")  # fmt: skip
    return count


def _check_grid(image: sitk.Image, path: Path) -> None:
    """Refuse vector voxels and a sheared grid (a direction that is not orthonormal)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path}: expected one value per voxel, got "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction @ direction.T, np.eye(3), atol=1e-4):
        raise VolumeError(
            f"{path}: its direction matrix {tuple(round(float(v), 4) for v in direction.ravel())} "
            "is not orthonormal (a sheared grid, e.g. a gantry tilt); resample it onto an "
            "orthogonal grid first"
        )


def _warn_sform_disagrees(image: sitk.Image, reader: sitk.ImageFileReader, path: Path) -> None:
    """Warn if the NIfTI sform puts the volume's corners elsewhere than ``image`` does."""
    gap = sform_gap(image, reader)
    if gap > 0.1:
        logger.warning(
            "%s: its sform places the volume up to %.1f mm from the geometry read here (its "
            "qform); tools that read the sform (nibabel, FSL) would place it there",
            path, gap,
        )


def _check_finite(image: sitk.Image, path: Path) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise VolumeError(f"{path}: contains NaN or Inf voxels")
    return image


def read_header(path: str | os.PathLike) -> sitk.ImageFileReader:
    """Read only the header of a volume file (size, spacing, ...) without the voxels.

    Args:
        path: an image file (not a DICOM folder).

    Returns:
        a reader on which ``GetSize()``, ``GetSpacing()``, ``GetOrigin()``,
        ``GetDirection()`` and ``GetDimension()`` are valid.

    Raises:
        VolumeError: missing or unreadable header, naming the file.
    """
    path = Path(path)
    _check_exists(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read header ({_first_line(str(exc), path)})") from None
    return reader


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise VolumeError(f"{folder}: folder holds {len(series)} DICOM series, expected one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, for the check below
    warnings = reader.GetGlobalWarningDisplay()
    reader.SetGlobalWarningDisplay(False)  # uneven slices are reported below, in one line
    try:
        image = reader.Execute()
    finally:
        reader.SetGlobalWarningDisplay(warnings)
    _check_even_slices(folder, files, reader, image)
    return image


def _check_even_slices(
    folder: Path, files: Sequence[str], reader: sitk.ImageSeriesReader, image: sitk.Image
) -> None:
    """Raise if a series' slices are unevenly spaced: a missing slice would stretch the volume.

    ``ImageSeriesReader`` averages the spacing over the series, so a gap would
    otherwise give the volume a wrong slice spacing, and a prediction written
    in that geometry would be misplaced. Positions are each slice's Image
    Position (Patient) along the volume's slice normal.
    """
    key = "0020|0032"
    if len(files) < 3 or not all(reader.HasMetaDataKey(i, key) for i in range(len(files))):
        return
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    positions = [
        float(np.dot([float(v) for v in reader.GetMetaData(i, key).split("\\")], normal))
        for i in range(len(files))
    ]
    gaps = np.abs(np.diff(positions))
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if abs(gaps[worst] - typical) > max(1e-3, 0.01 * typical):
        raise VolumeError(
            f"{folder}: DICOM slices are not evenly spaced ({gaps[worst]:.3g} mm between "
            f"{Path(files[worst]).name} and {Path(files[worst + 1]).name}, {typical:.3g} mm "
            "elsewhere): a missing slice?"
        )


def check_same_geometry(
    images: Mapping[str, sitk.Image | sitk.ImageFileReader],
    *,
    tol: float = 1e-4,
    case_id: str = "volume",
) -> None:
    """Check that all volumes of a case share one voxel grid.

    Args:
        images: name (channel or ``mask``) -> image, or a header-only reader from
            :func:`read_header`. The first entry is the reference.
        tol: absolute tolerance on spacing (mm), origin (mm) and direction cosines.
        case_id: named in the error message.

    Raises:
        VolumeError: size differs, or spacing/origin/direction differ by more than
            ``tol``; the message names the case, both volumes and both values.
    """
    if not images:
        return
    names = list(images)
    ref_name, ref = names[0], images[names[0]]
    ref_grid = _spatial_grid(ref)
    for name in names[1:]:
        img = images[name]
        grid = _spatial_grid(img)
        tols = (0.0, tol, tol, tol)
        for what, a, b, t in zip(("size", "spacing", "origin", "direction"), ref_grid, grid, tols):
            if len(a) != len(b) or not np.allclose(a, b, rtol=0.0, atol=t):
                raise VolumeError(
                    f"case {case_id}: {what} of '{name}'{_file_of(img)} {_fmt(b)} differs from "
                    f"'{ref_name}'{_file_of(ref)} {_fmt(a)} (tolerance {t})"
                )


def _spatial_grid(image: sitk.Image | sitk.ImageFileReader) -> tuple[tuple, ...]:
    """Size, spacing, origin and direction of an image's first three axes (a 4D
    file's volumes are compared by their grid in space)."""
    size, spacing, origin, direction = (
        image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    )  # fmt: skip
    if len(size) == 4:
        matrix = np.asarray(direction, dtype=float).reshape(4, 4)[:3, :3]
        return size[:3], spacing[:3], origin[:3], tuple(matrix.ravel())
    return size, spacing, origin, direction


def _file_of(image: sitk.Image | sitk.ImageFileReader) -> str:
    """`` (<file>)`` for a header-only reader, so that messages name the file."""
    name = image.GetFileName() if isinstance(image, sitk.ImageFileReader) else ""
    return f" ({name})" if name else ""


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def orientation_code(image: sitk.Image | Sequence[float]) -> str:
    """Three-letter DICOM orientation code (``LPS`` = identity direction).

    Args:
        image: an image, or its direction as 9 row-major floats.
    """
    direction = image.GetDirection() if isinstance(image, sitk.Image) else tuple(image)
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(direction)


def axis_transform(direction: Sequence[float], orientation: str) -> tuple[list[int], list[bool]]:
    """The permutation/flips that ``sitk.DICOMOrient(image, orientation)`` applies, as plain lists.

    Computed by reorienting a tiny image with the same direction, so it matches
    ``DICOMOrient`` exactly (including its choice for oblique directions).

    Args:
        direction: 9 row-major direction cosines of the original image.
        orientation: target DICOM code.

    Returns:
        ``(permutation, flips)`` over ITK index axes (x, y, z): canonical axis ``i``
        is original axis ``permutation[i]``, reversed when ``flips[i]``.
    """
    probe = sitk.Image([2, 3, 4], sitk.sitkUInt8)
    probe.SetDirection(tuple(float(d) for d in direction))
    out = sitk.DICOMOrient(probe, orientation)
    d_in = np.asarray(direction, dtype=float).reshape(3, 3)
    d_out = np.asarray(out.GetDirection(), dtype=float).reshape(3, 3)
    # d_out = d_in @ P with P a signed permutation; d_in is orthonormal.
    signed = np.rint(np.linalg.solve(d_in, d_out)).astype(int)
    permutation = [int(np.flatnonzero(signed[:, i])[0]) for i in range(3)]
    flips = [bool(signed[permutation[i], i] < 0) for i in range(3)]
    return permutation, flips


def reorient_array(
    array: np.ndarray, permutation: Sequence[int], flips: Sequence[bool]
) -> np.ndarray:
    """Apply :func:`axis_transform`'s result to a numpy volume (a view, no copy).

    Args:
        array: (z, y, x) array as from ``sitk.GetArrayFromImage`` of the original,
            or (z, y, x, ...) with trailing axes (e.g. RGB) that are kept.
        permutation, flips: from :func:`axis_transform`.

    Returns:
        (z', y', x'[, ...]) array equal to ``GetArrayFromImage(DICOMOrient(image, code))``.
    """
    # numpy axis a holds ITK axis 2 - a; trailing axes (e.g. RGB) stay last.
    axes = [2 - permutation[2 - a] for a in range(3)] + list(range(3, array.ndim))
    out = np.transpose(array, axes)
    flip_axes = tuple(a for a in range(3) if flips[2 - a])
    return np.flip(out, flip_axes) if flip_axes else out


def restore_array(
    array: np.ndarray, permutation: Sequence[int], flips: Sequence[bool]
) -> np.ndarray:
    """Exact inverse of :func:`reorient_array` (a view, no copy).

    Args:
        array: canonical (z', y', x') array.
        permutation, flips: the values used to produce it.

    Returns:
        the (z, y, x) array in the original voxel order.
    """
    flip_axes = tuple(a for a in range(3) if flips[2 - a])
    if flip_axes:
        array = np.flip(array, flip_axes)
    axes = [2 - permutation[2 - a] for a in range(3)]
    return np.transpose(array, np.argsort(axes))
