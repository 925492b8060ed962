"""Structured JSON logging shared by every kubefence command.

Every line on stderr is one JSON object with `timestamp`, `level`, `logger`
and `event`. Standard-library loggers (uvicorn, asyncio, the kubernetes
client) go through the same renderer, so a log pipeline sees one format.

Decisions use `decision_fields`, which fills the fixed key set so a decision
line always has the same keys, empty where they do not apply.
"""

import logging
import sys
from typing import Any

import orjson
import structlog

# The keys every decision line carries, in this order.
DECISION_KEYS = (
    "decision",
    "reason",
    "namespace",
    "pod",
    "container",
    "runtime_class",
    "runtime_handler",
    "profile",
    "request_uid",
    "container_id",
)

DECISIONS = ("inject", "skip", "reject")


def decision_fields(**fields: Any) -> dict[str, Any]:
    """Return the decision key set with `fields` filled in and every other key empty."""
    unknown = set(fields) - set(DECISION_KEYS)
    if unknown:
        raise TypeError(f"unknown decision log keys: {sorted(unknown)}")
    if fields.get("decision") not in DECISIONS:
        raise ValueError(f"invalid decision {fields.get('decision')!r}; expected one of {DECISIONS}")
    return {key: fields.get(key, "") for key in DECISION_KEYS}


def _render(_, __, event_dict: dict[str, Any]) -> bytes:
    return orjson.dumps(event_dict, default=str)


def configure_logging(level: str = "info", stream=None) -> None:
    """Send structlog and standard-library records to `stream` (stderr) as JSON lines."""
    stream = stream or sys.stderr
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"invalid log level {level!r}; expected debug, info, warning or error")

    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    structlog.configure(
        processors=[
            _name_logger,
            *shared,
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.BytesLoggerFactory(getattr(stream, "buffer", stream)),
        cache_logger_on_first_use=False,
    )

    # Standard-library records: rendered by the same JSON renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)


def _name_logger(_, __, event_dict: dict[str, Any]) -> dict[str, Any]:
    # get_logger stores the name as `logger_name` because structlog's own
    # factory reserves the `logger` argument.
    name = event_dict.pop("logger_name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a logger that takes the configuration in force when it first logs.

    Module-level loggers are created at import, before `configure_logging`
    runs, so the logger stays a lazy proxy until its first call.
    """
    return structlog.get_logger(logger_name=name)
