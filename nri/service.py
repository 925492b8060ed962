"""ttrpc service dispatch: method name to handler, request type and reply type.

`Dispatcher.dispatch` decodes a request payload, calls the handler and
encodes the reply, or returns the ttrpc status to reply with:

* unknown service: 12 (Unimplemented), message "service <name>";
* unknown method: 12 (Unimplemented), message "method <name>";
  the messages have the shape the Go ttrpc server uses, and NRI v0.12
  runtimes fall back to the older StateChange call only on code 12;
* payload that does not decode: 3 (InvalidArgument);
* handler raising RpcError: its code and message;
* handler raising anything else: 2 (Unknown), and `Outcome.error` holds
  the exception so the caller can log it.

None of these closes the connection. The module does no I/O.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubefence.nri.errors import RpcError
from kubefence.nri.ttrpc import INVALID_ARGUMENT, UNIMPLEMENTED, UNKNOWN


@dataclass(frozen=True, slots=True)
class Method:
    """One ttrpc method: the handler takes the decoded request and returns the reply message."""

    handler: Callable[[Any], Any]
    request_type: type
    reply_type: type


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one call: reply payload on success, else a status."""

    payload: bytes = b""
    status: tuple[int, str] | None = None
    # The unexpected exception behind status 2, for the caller to log.
    error: BaseException | None = None


class Dispatcher:
    """Route calls to handlers by service and method name."""

    def __init__(self, services: Mapping[str, Mapping[str, Method]]):
        self.services = {name: dict(methods) for name, methods in services.items()}

    def dispatch(self, service: str, method: str, payload: bytes) -> Outcome:
        methods = self.services.get(service)
        if methods is None:
            return Outcome(status=(UNIMPLEMENTED, f"service {service}"))
        entry = methods.get(method)
        if entry is None:
            return Outcome(status=(UNIMPLEMENTED, f"method {method}"))

        try:
            request = entry.request_type.FromString(payload)
        except Exception as error:  # protobuf DecodeError and relatives
            return Outcome(status=(INVALID_ARGUMENT, f"invalid {entry.request_type.__name__} payload: {error}"))

        try:
            reply = entry.handler(request)
        except RpcError as error:
            return Outcome(status=(error.code, error.message))
        except Exception as error:
            return Outcome(status=(UNKNOWN, f"{service}/{method} failed: {error}"), error=error)

        if not isinstance(reply, entry.reply_type):
            error = TypeError(
                f"handler of {service}/{method} returned {type(reply).__name__!r}; "
                f"expected {entry.reply_type.__name__!r}"
            )
            return Outcome(status=(UNKNOWN, str(error)), error=error)
        return Outcome(payload=reply.SerializeToString())
