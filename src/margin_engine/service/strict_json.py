"""Request bodies whose objects give each key once.

JSON keeps the last of a repeated key without a word (``{"size": 1, "size": 100}`` is a size of
100); a client that sends one has a bug the service should name, as the file readers do
(``io.jsonfields.loads_unique``). FastAPI reads a JSON body through ``Request.json``; the
routers' route class hands it a request whose ``json`` refuses repeated keys, answered as a
JSON error (422, ``body: valid JSON (the key 'size' is given twice in an object)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from margin_engine.core.errors import InputError
from margin_engine.io.jsonfields import loads_unique


class UniqueKeysRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads_unique(body)
            except InputError as exc:
                raise json.JSONDecodeError(f"the key {exc.field!r} is given twice in an object",
                                           body.decode("utf-8", "replace"), 0) from None
        return self._json


class UniqueKeysRoute(APIRoute):
    """An API route whose JSON body may not repeat a key in an object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(UniqueKeysRequest(request.scope, request.receive))
        return route
