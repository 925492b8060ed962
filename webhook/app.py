"""The webhook's HTTP endpoints (FastAPI): POST /mutate, GET /healthz, /readyz and /metrics.

The admission path avoids the framework's costly parts: the body is read as
bytes and parsed with orjson, only the fields the decision needs are
checked, and the response is a Response of bytes built by `build_response`,
so FastAPI never runs its encoder or a pydantic model over a review.
"""

import inspect
import time

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from kubefence.common.logs import decision_fields, get_logger
from kubefence.webhook.errors import PayloadTooLargeError, ReviewError
from kubefence.webhook.mutation import build_response, decide
from kubefence.webhook.review import check_content_type, parse_review
from kubefence.webhook.state import WebhookState

# An AdmissionReview carries the object and, on UPDATE, the old object;
# kube-apiserver caps a stored object at about 1.5 MiB (etcd's default
# request limit), so 8 MiB leaves room for both plus JSON overhead.
MAX_BODY_BYTES = 8 * 1024 * 1024

_ERROR_KINDS = {400: "bad-request", 413: "payload-too-large", 415: "unsupported-media-type"}


def _fastapi_options() -> dict:
    options: dict = {"openapi_url": None, "docs_url": None, "redoc_url": None}
    # FastAPI 0.165 checks its built-in OpenTelemetry hooks on every request;
    # turning them off is worth about 13 % of throughput. Older versions have
    # no such parameter.
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    return options


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes is above the maximum of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is above the maximum of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(message: str, status_code: int) -> Response:
    return Response(message + "\n", status_code=status_code, media_type="text/plain; charset=utf-8")


def create_app(state: WebhookState, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """Build the ASGI app that serves `state`."""
    app = FastAPI(title="kubefence webhook", **_fastapi_options())
    log = get_logger("kubefence.webhook")
    metrics = state.metrics

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            check_content_type(request.headers.get("content-type"))
            body = await _read_body(request, max_body_bytes)
            uid, review_request = parse_review(body)
            decision = decide(review_request, state.policy, state.own_namespace)
        except ReviewError as error:
            kind = _ERROR_KINDS.get(error.status_code, "bad-request")
            metrics.errors.labels(kind).inc()
            log.warning("invalid admission request", status=error.status_code, error=str(error))
            return _text(str(error), error.status_code)
        except Exception:
            metrics.errors.labels("internal").inc()
            log.exception("admission request failed")
            return _text("internal error; see the webhook log", 500)

        content = build_response(uid, decision)
        metrics.requests.labels(decision.decision, decision.reason).inc()
        if decision.profile_fallback:
            metrics.profile_fallbacks.inc()
        log.info(
            "admission decision",
            **decision_fields(
                decision=decision.decision,
                reason=str(decision.reason),
                namespace=decision.namespace,
                pod=decision.pod,
                runtime_class=decision.runtime_class,
                profile=decision.profile,
                request_uid=uid,
            ),
            operation=review_request.get("operation") or "",
            dry_run=review_request.get("dryRun") is True,
            patch_operations=len(decision.patch),
            message=decision.message,
        )
        metrics.latency.observe(time.perf_counter() - started)
        return Response(content, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return _text("ok", 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        results = state.readiness.run()
        ready = all(reason is None for reason in results.values())
        body = orjson.dumps({"ready": ready, "checks": {name: reason or "ok" for name, reason in results.items()}})
        return Response(body, status_code=200 if ready else 503, media_type="application/json")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
