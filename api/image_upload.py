"""The upload options of an image dataset (``image_zip``, ``image_parquet``), as the route takes them.

Kept apart from the route so the route's diff stays a few call-site lines; the conversion itself
is :mod:`archscreen.core.data.images`, run in the validation child. The options come as query
parameters or (multipart) as form fields, merged like a table's options: a 422 naming the field
where the two differ, where a form value does not fit, or where the format takes no images.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import astuple, dataclass

from archscreen.api.errors import ApiValidationError, item

IMAGE_SIZE_PATTERN = r"^[0-9]{1,4}(x[0-9]{1,4})?$"
IMAGE_SIZE_DOC = (
    "Images: the size every image is resized to, N (square) or HxW, each side 1..1024. Default: the "
    "median height and width, scaled down together so the longer side is at most 64."
)
IMAGE_MODE_DOC = "Images: L (grey) or RGB. Default: RGB if any image is in colour, else L."
IMAGE_MODES = ("L", "RGB")
NO_LABEL = {
    "npz": "an .npz names its targets y_*",
    "image_zip": "an image zip's class is its folder",
}
# A Parquet may turn out to hold images (the child finds the image-bytes column), so it may take them.
TAKES_IMAGE_OPTIONS = ("image_zip", "image_parquet", "parquet")


@dataclass(frozen=True)
class ImageOptions:
    """An image upload's options as the request gave them (None: the default)."""

    image_size: str | None = None
    image_mode: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in astuple(self))

    def child_args(self) -> list[str]:
        """The validation child's arguments for the options that were given."""
        size, mode = self.image_size, self.image_mode
        return (["--image-size", size] if size else []) + (["--image-mode", mode] if mode else [])

    def key(self, table_key: str) -> str:
        """The dataset's options key: the table's, or (options given) a hash of both."""
        if not self.given():
            return table_key
        return hashlib.sha256(f"{table_key};{self.image_size};{self.image_mode}".encode()).hexdigest()


def _form_images(fields: dict[str, str]) -> ImageOptions:
    size, mode = fields.get("image_size"), fields.get("image_mode")
    if size is not None and not re.match(IMAGE_SIZE_PATTERN, size):
        raise ApiValidationError([item(["body", "image_size"], "N or HxW, e.g. 32 or 24x32")])
    if mode is not None and mode not in IMAGE_MODES:
        raise ApiValidationError([item(["body", "image_mode"], "L or RGB")])
    return ImageOptions(size, mode)


def resolve_images(fmt: str, query: ImageOptions, fields: dict[str, str] | None) -> ImageOptions:
    """The image options from the query and (multipart) the form's fields."""
    form = _form_images(fields) if fields is not None else ImageOptions()
    merged: dict[str, str | None] = {}
    for key in ("image_size", "image_mode"):
        given, sent = getattr(query, key), getattr(form, key)
        if given is not None and sent is not None and given != sent:
            raise ApiValidationError([item(["body", key], f"differs from the query's {key} ({given!r})")])
        merged[key] = given if given is not None else sent
        if merged[key] is not None and fmt not in TAKES_IMAGE_OPTIONS:
            where = "query" if given is not None else "body"
            raise ApiValidationError(
                [item([where, key], f"a {fmt} upload has no images: {key} is for images")]
            )
    return ImageOptions(**merged)
