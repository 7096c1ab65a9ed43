"""Image reading for SAM: every image, whatever its file format, becomes 3-channel uint8 RGB.

SAM's encoder expects RGB uint8 (normalised later with the ImageNet mean/std), but several
benchmark datasets ship 16-bit fluorescence TIFFs, grayscale PNGs, palette PNGs or RGBA PNGs.
:func:`read_image_rgb` reads them all:

* TIFF files (``.tif``/``.tiff``) are read with ``tifffile``; every other file with Detectron2's
  :func:`~detectron2.data.detection_utils.read_image` (PIL, EXIF orientation applied).
* 8-bit images keep their values. PIL converts palette, grayscale, CMYK and YCbCr images to RGB;
  alpha channels (RGBA, gray+alpha) are dropped, not composited.
* Images of any other pixel type (uint16, int32, float, ...) are stretched linearly per image:
  the :data:`STRETCH_PERCENTILES` (1st and 99.8th) percentiles of all pixel values, taken jointly
  over the channels so that colour balance is kept, map to 0 and 255; values outside are clipped.
  If those percentiles coincide the image's min and max are used instead; a constant image
  becomes black. NaN pixels become 0.
* Single-channel images are repeated to 3 channels. Planar TIFFs (C, H, W) with C in 1..4 are
  moved to channels-last.
"""

import logging
import os

import numpy as np
import tifffile
from detectron2.data.detection_utils import read_image
from PIL import Image, UnidentifiedImageError

__all__ = ["STRETCH_PERCENTILES", "read_image_rgb", "to_rgb_uint8"]

logger = logging.getLogger(__name__)

#: Lower and upper percentile mapped to 0 and 255 when a non-uint8 image is stretched.
STRETCH_PERCENTILES: tuple[float, float] = (1.0, 99.8)

_TIFF_SUFFIXES = (".tif", ".tiff")
# PIL modes whose pixels do not fit in uint8: read raw (format=None) and stretched here, because
# PIL's own conversion to RGB would saturate them.
_HIGH_DEPTH_PIL_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8, whatever its bit depth and channel layout.

    Args:
        path: image file (any format PIL reads, or TIFF).

    Returns:
        (H, W, 3) uint8 array in RGB order; see the module docstring for the conversion rules.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not an image file, or its array shape / pixel type is not an
            image (e.g. a multi-page TIFF stack).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} not found")
    if path.lower().endswith(_TIFF_SUFFIXES):
        try:
            array = tifffile.imread(path)
        except (tifffile.TiffFileError, ValueError, OSError) as e:
            raise ValueError(f"{path} is not a readable TIFF image: {e}") from e
    else:
        try:
            with Image.open(path) as img:  # reads the header only
                mode = img.mode
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path} is not an image file PIL can read: {e}") from e
        array = read_image(path, format=None if mode in _HIGH_DEPTH_PIL_MODES else "RGB")
    return to_rgb_uint8(array, source=path)


def to_rgb_uint8(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Convert an image array to (H, W, 3) uint8 RGB.

    Args:
        image: (H, W), (H, W, C) or planar (C, H, W) array, C in 1..4 (1 gray, 2 gray+alpha,
            3 RGB, 4 RGBA), of any integer, float or bool type.
        source: name used in error messages (usually the file path).

    Returns:
        (H, W, 3) uint8 array; uint8 input keeps its values, other types are stretched with
        :data:`STRETCH_PERCENTILES`, bool becomes 0/255.

    Raises:
        ValueError: the array is not an image (wrong rank or channel count, non-numeric type).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 2, 3, 4) and image.shape[-1] not in (1, 2, 3, 4):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"{source}: array of shape {image.shape} is not an image; expected (H, W), "
            "(H, W, C) or (C, H, W) with C in 1..4"
        )
    image = image[..., :1] if image.shape[-1] <= 2 else image[..., :3]  # drop alpha
    image = _to_uint8(image, source)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, source: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{source}: pixel type {image.dtype} is not an image type")
    values = image.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(finite, STRETCH_PERCENTILES)
    if high <= low:
        low, high = finite.min(), finite.max()
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    logger.debug("%s: %s image stretched from [%g, %g] to [0, 255]", source, image.dtype, low, high)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
