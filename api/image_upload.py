"""The upload options of an image dataset (``image_zip``, ``image_parquet``), as the route takes them.

Kept apart from the route so the route's diff stays a few call-site lines; the conversion itself
is :mod:`archscreen.core.data.images`, run in the validation child.
"""

from __future__ import annotations

IMAGE_SIZE_PATTERN = r"^[0-9]{1,4}(x[0-9]{1,4})?$"
IMAGE_SIZE_DOC = (
    "Images: the size every image is resized to, N (square) or HxW, each side 1..1024. Default: the "
    "median height and width, scaled down together so the longer side is at most 64."
)
IMAGE_MODE_DOC = "Images: L (grey) or RGB. Default: RGB if any image is in colour, else L."
NO_LABEL = {
    "npz": "an .npz names its targets y_*",
    "image_zip": "an image zip's class is its folder",
}


def image_args(size: str | None, mode: str | None) -> tuple[str, ...]:
    """The validation child's arguments for the image options that were given."""
    return (("--image-size", size) if size else ()) + (("--image-mode", mode) if mode else ())
