"""An upload's body, streamed to a file as it arrives (never whole in memory), hashed on the way.

Two encodings of ``POST /api/v1/datasets``:

* the raw body (``Content-Type: application/octet-stream``, or anything but multipart);
* ``multipart/form-data`` (``curl -F file=@data.npz``): exactly one file part, whose bytes are
  the dataset, and optional text parts ``name``, ``format``, ``label_column`` and a table's
  options ``standardize``, ``categorical_columns`` (repeated, or comma-separated) and
  ``max_categories`` (the query parameters of the same names). The part's field name, when it is
  a format (``-F npz=@blob``), or else its filename's suffix, gives the format. Parsed by
  python-multipart's push parser, one received chunk at a time.

Past ``limit`` bytes of file the upload is :class:`UploadTooLarge`; a malformed form is an
:class:`~archscreen.api.errors.ApiValidationError` naming ``body`` or the part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from starlette.requests import Request

from archscreen.api.errors import ApiValidationError, item

FORM_FIELDS = ("name", "format", "label_column")
OPTION_FIELDS = ("standardize", "categorical_columns", "max_categories")  # a table's preprocessing
IMAGE_FIELDS = ("image_size", "image_mode")  # an image upload's (api/image_upload.py)
REPEATED_FIELD = "categorical_columns"  # its values are joined with "," (the query's comma form)
MAX_FIELD_BYTES = 1000
# bytes of a multipart body besides the file: boundaries, part headers, the text fields
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """The file passed the size limit while it streamed in."""


@dataclass
class Received:
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # multipart: the file part's filename
    part_name: str | None = None  # multipart: the file part's field name


class _Sink:
    """Bytes of the file: written to ``f``, hashed, counted against ``limit``."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self.f, self.limit, self.size, self.digest = f, limit, 0, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise UploadTooLarge
        self.digest.update(data)
        self.f.write(data)


async def receive_raw(request: Request, dst: Path, limit: int) -> Received:
    with dst.open("wb") as f:
        sink = _Sink(f, limit)
        async for chunk in request.stream():
            sink.write(chunk)
    return Received(sink.digest.hexdigest(), sink.size)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


class _FormReader:
    """python-multipart callbacks: the one file part goes to the sink, text parts to ``fields``."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.part_name: str | None = None
        self._header_name, self._header_value = b"", b""
        self._headers: dict[bytes, bytes] = {}
        self._text: bytearray | None = None  # the current text part's bytes
        self._current = ""
        self._in_file = False
        self.ended = False  # the closing boundary was read

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add_header(name=d[s:e]),
            "on_header_value": lambda d, s, e: self._add_header(value=d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _end(self) -> None:
        self.ended = True

    def _part_begin(self) -> None:
        self._headers, self._text, self._in_file = {}, None, False

    def _add_header(self, name: bytes = b"", value: bytes = b"") -> None:
        self._header_name += name
        self._header_value += value

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        self._current = name
        if filename is not None:
            if self.part_name is not None:
                raise ApiValidationError([item(["body", name], "one file per upload: a second file part")])
            self.part_name, self.filename = name, filename.decode("utf-8", errors="replace")
            self._in_file = True
        elif name in FORM_FIELDS or name in OPTION_FIELDS or name in IMAGE_FIELDS:
            self._text = bytearray()
        else:
            raise ApiValidationError(
                [
                    item(
                        ["body", name or "(unnamed)"],
                        "unknown form field; expected a file part and "
                        f"{FORM_FIELDS + OPTION_FIELDS + IMAGE_FIELDS}",
                    )
                ]
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.sink.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiValidationError(
                    [item(["body", self._current], f"longer than {MAX_FIELD_BYTES} bytes")]
                )

    def _part_end(self) -> None:
        if self._text is not None:
            text = self._text.decode("utf-8", errors="replace")
            if self._current == REPEATED_FIELD and self._current in self.fields:
                text = f"{self.fields[self._current]},{text}"
            self.fields[self._current] = text
        self._text, self._in_file = None, False


async def receive_multipart(request: Request, dst: Path, limit: int) -> Received:
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiValidationError([item(["header", "content-type"], "multipart/form-data without a boundary")])
    with dst.open("wb") as f:
        reader = _FormReader(_Sink(f, limit))
        parser = MultipartParser(boundary, reader.callbacks(), max_size=limit + FORM_OVERHEAD_BYTES)  # type: ignore[arg-type]
        try:
            async for chunk in request.stream():
                if parser.write(chunk) < len(chunk):  # max_size reached: the rest is not parsed
                    raise UploadTooLarge
        except MultipartParseError as exc:
            raise ApiValidationError([item(["body"], f"malformed multipart/form-data: {exc}")]) from None
    if not reader.ended:
        raise ApiValidationError(
            [item(["body"], "the multipart/form-data body ends before its closing boundary")]
        )
    if reader.part_name is None:
        raise ApiValidationError(
            [item(["body", "file"], "no file part: send the dataset as one (curl -F file=@data.npz)")]
        )
    return Received(
        reader.sink.digest.hexdigest(), reader.sink.size, reader.fields, reader.filename, reader.part_name
    )
