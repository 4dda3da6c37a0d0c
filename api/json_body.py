"""JSON request bodies read strictly: a key given twice in one object is refused (422 naming it).

Python's reader (and so FastAPI's) keeps the last of a repeated key: `{"decision": "approve", "decision":
"reject"}` stored a rejection, while a proxy, a firewall or a log that reads the first saw an approval (an
attacker's find). JSON Lines imports refuse repeated keys the same way (services/import_reading.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from core.inputs import RepeatedKey, json_object_once


class RepeatedBodyKey(HTTPException):
    """A key given twice in one JSON object of the body; `field` names it."""

    def __init__(self, key: str) -> None:
        self.field = key[:60]
        super().__init__(status_code=422, detail=f"the body gives key {key[:60]!r} twice in one object; give it once")


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = json.loads(await self.body(), object_pairs_hook=json_object_once)
            except RepeatedKey as err:
                raise RepeatedBodyKey(err.key) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """Every API route: its JSON body is read by StrictJSONRequest (FastAPI's reader passes an HTTPException
    raised while reading through, as it does malformed JSON's 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
