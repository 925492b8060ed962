"""A minimal ASGI app that runs the webhook's mutation without a framework.

It is the benchmark's measure of what FastAPI costs: the same decision and
response bytes as `kubefence webhook` (`decide` and `build_response` from
`kubefence.webhook.mutation`, JSON parsed with orjson), with nothing around
them. It skips what the real webhook adds per request: content-type and
review-version checks, metrics and the decision log line.

Run it under uvicorn: `uvicorn raw_asgi:app --app-dir bench/webhook ...`.
The embedded default policy applies.
"""

import orjson

from kubefence.common.policy import default_policy_text, load_policy
from kubefence.webhook.mutation import build_response, decide

POLICY = load_policy(default_policy_text(), source="embedded default policy")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain")]


async def _read_body(receive) -> bytes:
    chunks = []
    more_body = True
    while more_body:
        message = await receive()
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    return b"".join(chunks)


async def _send(send, status: int, headers: list, body: bytes) -> None:
    headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        raise NotImplementedError(f"unsupported ASGI scope type {scope['type']!r}")
    if scope["method"] != "POST":
        await _send(send, 405, _TEXT_HEADERS, b"expected POST\n")
        return

    body = await _read_body(receive)
    try:
        request = orjson.loads(body)["request"]
        uid = request["uid"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        await _send(send, 400, _TEXT_HEADERS, b"expected an AdmissionReview with a request\n")
        return

    decision = decide(request, POLICY)
    await _send(send, 200, _JSON_HEADERS, build_response(uid, decision))
