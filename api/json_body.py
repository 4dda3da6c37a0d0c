"""Request bodies read strictly: a key given twice in one JSON object is refused (422 naming it), and so is a form
field whose name, value or file name is not in the form's charset (UTF-8 unless its Content-Type says).

Python's reader (and so FastAPI's) keeps the last of a repeated key: `{"decision": "approve", "decision":
"reject"}` stored a rejection, while a proxy, a firewall or a log that reads the first saw an approval (an
attacker's find). JSON Lines imports refuse repeated keys the same way (services/import_reading.py). Starlette
reads a form field that is not UTF-8 as Latin-1, unsaid: an import's `task=bi\\xe9s` (Latin-1) became "biés" and
matched the file's UTF-8 column."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from core.inputs import RepeatedKey, json_object_once


class RepeatedBodyKey(HTTPException):
    """A key given twice in one JSON object of the body; `field` names it."""

    def __init__(self, key: str) -> None:
        self.field = key[:60]
        super().__init__(status_code=422, detail=f"the body gives key {key[:60]!r} twice in one object; give it once")


class UndecodableFormField(HTTPException):
    """A form field whose name, value or file name is not in the form's charset; `field` names it."""

    def __init__(self, field: str, what: str, charset: str, err: UnicodeDecodeError) -> None:
        self.field = field[:60]
        byte = err.object[err.start : err.start + 1].hex()
        super().__init__(
            status_code=422,
            detail=f"form field {field[:60]!r}: its {what} is not valid {charset} (byte 0x{byte} at offset "
            f"{err.start}); send form fields as UTF-8",
        )


def _check_decodes(data: bytes | bytearray, charset: str, field: str | bytes, what: str) -> None:
    try:
        data.decode(charset)
    except UnicodeDecodeError as err:
        name = field if isinstance(field, str) else field.decode(charset, errors="replace")
        raise UndecodableFormField(name, what, charset, err) from None


class UnknownFormCharset(HTTPException):
    """A form whose Content-Type names a charset that is no text encoding here (Starlette read it as Latin-1)."""

    def __init__(self, charset: str) -> None:
        self.field = "charset"
        super().__init__(
            status_code=422,
            detail=f"the form's charset {charset[:40]!r} is not a text encoding this server knows; send form fields "
            "as UTF-8",
        )


class StrictMultiPartParser(MultiPartParser):
    """Starlette's multipart reader, refusing what it would read as Latin-1 in place of the form's charset."""

    async def parse(self) -> FormData:
        # Starlette reads a charset it does not know as Latin-1, so every byte decoded: `charset=x` let a field's
        # Latin-1 through unsaid; a codec that is no text encoding (rot13) failed as an unreadable body
        charset = parse_options_header(self.headers["Content-Type"])[1].get(b"charset")
        if charset is not None:
            named = charset.decode("latin-1") if isinstance(charset, bytes) else str(charset)
            try:
                text_encoding = codecs.lookup(named)._is_text_encoding  # type: ignore[attr-defined]
            except LookupError:
                text_encoding = False
            if not text_encoding:
                raise UnknownFormCharset(named)
        return await super().parse()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        name = options.get(b"name", b"")
        _check_decodes(name, self._charset, name, "name")
        if b"filename" in options:
            _check_decodes(options[b"filename"], self._charset, name, "file name")
        super().on_headers_finished()

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            _check_decodes(self._current_part.data, self._charset, self._current_part.field_name, "value")
        super().on_part_end()


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = json.loads(await self.body(), object_pairs_hook=json_object_once)
            except RepeatedKey as err:
                raise RepeatedBodyKey(err.key) from None
        return self._json

    async def _get_form(
        self, *, max_files: int | float = 1000, max_fields: int | float = 1000, max_part_size: int = 1024 * 1024
    ) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type"))
        if self._form is None and content_type == b"multipart/form-data":
            try:
                async with aclosing(self.stream()) as stream:
                    parser = StrictMultiPartParser(
                        self.headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
                    )
                    self._form = await parser.parse()
            except MultiPartException as exc:  # as Starlette answers it
                raise HTTPException(status_code=400, detail=exc.message) from exc
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class StrictJSONRoute(APIRoute):
    """Every API route: its JSON body or form is read by StrictJSONRequest (FastAPI's reader passes an
    HTTPException raised while reading through, as it does malformed JSON's 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
