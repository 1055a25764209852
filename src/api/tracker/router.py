"""GET /js/script.js: the tracker, from the file beside this module, cacheable for an hour and
revalidated by its ETag (a deploy with a new script is picked up within the hour)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

SCRIPT = (Path(__file__).parent / "script.js").read_bytes()
ETAG = '"' + hashlib.sha256(SCRIPT).hexdigest()[:20] + '"'
_HEADERS = {"Cache-Control": "public, max-age=3600", "ETag": ETAG}

router = APIRouter(tags=["tracker"])


class JavaScript(Response):
    media_type = "text/javascript; charset=utf-8"


@router.get("/js/script.js", response_class=JavaScript, responses={200: {"content": {"text/javascript": {}}}})
async def tracker_script(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    if if_none_match is not None and ETAG in if_none_match:
        return Response(status_code=304, headers=_HEADERS)
    return JavaScript(SCRIPT, headers=_HEADERS)
