"""One router per resource; `api.main` includes them all.

`JSONBodyRoute` is the route class of the routers that take JSON bodies: it parses them with
orjson, three times faster than the standard library on a 1,000-row batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                # NaN and Infinity literals (what Python's json.dumps writes) are not JSON, but
                # the standard parser reads them, so the 422 can name the field that holds one;
                # real syntax errors raise here with the position FastAPI reports.
                self._json = json.loads(body)
        return self._json


class JSONBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson
