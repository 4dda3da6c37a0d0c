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


class RepeatedKey(HTTPException):
    """A key given twice in one JSON object of the body; `field` names it."""

    def __init__(self, key: str) -> None:
        self.field = key[:60]
        super().__init__(status_code=422, detail=f"the body gives key {key[:60]!r} twice in one object; give it once")


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return obj


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=_object_once)
        return self._json


class StrictJSONRoute(APIRoute):
    """Every API route: its JSON body is read by StrictJSONRequest (FastAPI's reader passes an HTTPException
    raised while reading through, as it does malformed JSON's 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
