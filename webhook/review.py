"""Reading an AdmissionReview request body: only the few members the decision needs are checked.

A full model of the review (pydantic or otherwise) would cost about half of
the webhook's throughput. The decision reads `request.uid`, `operation`,
`kind`, `subResource`, `namespace`, `object` and `oldObject`, and
`kubefence.webhook.mutation` type-checks the pod fields it reads.
"""

from collections.abc import Mapping
from typing import Any

import orjson

from kubefence.webhook.errors import ReviewError, UnsupportedMediaTypeError
from kubefence.webhook.mutation import ADMISSION_API_VERSION, short_repr


def check_content_type(content_type: str | None) -> None:
    """Raise UnsupportedMediaTypeError unless `content_type` is application/json (parameters allowed)."""
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaTypeError("missing Content-Type; expected application/json")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"unsupported content type {content_type!r}; expected application/json"
        )


def parse_review(body: bytes) -> tuple[str, Mapping[str, Any]]:
    """Parse an AdmissionReview body; return the request uid and the `request` member."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ReviewError(f"request body is not valid JSON: {error}") from None
    if not isinstance(review, dict):
        raise ReviewError("request body is not an AdmissionReview object")
    api_version = review.get("apiVersion")
    if api_version != ADMISSION_API_VERSION:
        raise ReviewError(
            f"unsupported AdmissionReview apiVersion {api_version!r}; expected {ADMISSION_API_VERSION!r}"
        )
    if review.get("kind") != "AdmissionReview":
        raise ReviewError(f"invalid kind {review.get('kind')!r}; expected 'AdmissionReview'")
    request = review.get("request")
    if request is None:
        raise ReviewError("missing request; expected an object")
    if not isinstance(request, dict):
        raise ReviewError(f"invalid request {short_repr(request)}; expected an object")
    uid = request.get("uid")
    if uid is None or uid == "":
        raise ReviewError("missing request.uid; expected a non-empty string")
    if not isinstance(uid, str):
        raise ReviewError(f"invalid request.uid {short_repr(uid)}; expected a non-empty string")
    return uid, request
