"""Service dispatch: routing, status codes and messages."""

import pytest

from kubefence.nri import api_pb2
from kubefence.nri.errors import RpcError
from kubefence.nri.service import Dispatcher, Method

SERVICE = "nri.pkg.api.v1alpha1.Plugin"


def configure(request):
    return api_pb2.ConfigureResponse(events=len(request.runtime_name))


def failing(request):
    raise KeyError("boom")


def rejecting(request):
    raise RpcError(2, "profile '--allow-all' is invalid")


def wrong_type(request):
    return api_pb2.Empty()


@pytest.fixture
def dispatcher():
    return Dispatcher(
        {
            SERVICE: {
                "Configure": Method(configure, api_pb2.ConfigureRequest, api_pb2.ConfigureResponse),
                "Failing": Method(failing, api_pb2.Empty, api_pb2.Empty),
                "Rejecting": Method(rejecting, api_pb2.Empty, api_pb2.Empty),
                "WrongType": Method(wrong_type, api_pb2.Empty, api_pb2.ConfigureResponse),
            }
        }
    )


def test_dispatcher_calls_handler(dispatcher):
    payload = api_pb2.ConfigureRequest(runtime_name="containerd").SerializeToString()
    outcome = dispatcher.dispatch(SERVICE, "Configure", payload)
    assert outcome.status is None
    assert api_pb2.ConfigureResponse.FromString(outcome.payload).events == 10


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [
        (SERVICE, "NoSuchMethod", "method NoSuchMethod"),
        ("nope.Service", "Configure", "service nope.Service"),
        ("", "", "service "),
    ],
    ids=["unknown-method", "unknown-service", "empty-names"],
)
def test_dispatcher_unknown_is_unimplemented(dispatcher, service, method, message):
    outcome = dispatcher.dispatch(service, method, b"")
    assert outcome.status == (12, message)
    assert outcome.payload == b""


def test_dispatcher_undecodable_payload_invalid_argument(dispatcher):
    outcome = dispatcher.dispatch(SERVICE, "Configure", b"\x12\xff")
    assert outcome.status[0] == 3
    assert "ConfigureRequest" in outcome.status[1]


def test_dispatcher_rpc_error_keeps_code(dispatcher):
    outcome = dispatcher.dispatch(SERVICE, "Rejecting", b"")
    assert outcome.status == (2, "profile '--allow-all' is invalid")
    assert outcome.error is None


def test_dispatcher_handler_crash_unknown_with_error(dispatcher):
    outcome = dispatcher.dispatch(SERVICE, "Failing", b"")
    assert outcome.status[0] == 2
    assert "boom" in outcome.status[1]
    assert isinstance(outcome.error, KeyError)


def test_dispatcher_wrong_reply_type_reported(dispatcher):
    outcome = dispatcher.dispatch(SERVICE, "WrongType", b"")
    assert outcome.status[0] == 2
    assert isinstance(outcome.error, TypeError)
