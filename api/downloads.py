"""Responses of the download routes: a spooled file streamed and closed however the response ends, and the
headers alone for a HEAD request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO

from fastapi.responses import FileResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

CHUNK_BYTES = 64 * 1024


def _read(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(CHUNK_BYTES):
        yield chunk


class SpooledFileResponse(StreamingResponse):
    """An open file (services.datasets Export.spool) as the body, read in chunks off the event loop. The file is
    closed, and so deleted, when the response ends: read to its end, failed, or the client gone (Starlette then
    stops iterating without closing the iterator, which would keep the file until garbage collection)."""

    def __init__(self, file: IO[bytes], *, media_type: str, headers: Mapping[str, str]) -> None:
        self.file = file
        super().__init__(_read(file), media_type=media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()


def headers_only(media_type: str, headers: Mapping[str, str] | None = None) -> StreamingResponse:
    """What a HEAD gets from a download route: the GET's status and headers (a stream's: no Content-Length), and
    no body made."""
    return StreamingResponse(iter(()), media_type=media_type, headers=headers)


class HeadFileResponse(FileResponse):
    """A file's headers alone, for a HEAD (HeadAsGet routes it as a GET, so FileResponse sent the whole file for
    the middleware to drop): the GET's Content-Length, type, disposition and validators, the file not read."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__({**scope, "method": "HEAD"}, receive, send)
