"""Replay every captured runtime request against the plugin's handlers.

The captured plugin was a Go stub that wrapped with profile "strict" and
rejected pods annotated `nono-stub/reject`. Our plugin answers the same
requests with its own policy, so replies are compared byte for byte where
they are deterministic (every empty reply, error codes, the wrapped args)
and by shape elsewhere (Configure's event mask, which differs by design).
"""

import pytest
from .captures import RUNTIME_TO_PLUGIN, SESSIONS, messages, stream

from kubefence.nri import api_pb2, ttrpc_pb2
from kubefence.nri.config import PluginConfig
from kubefence.nri.plugin import BASE_EVENTS, Plugin
from kubefence.nri.ttrpc import Connection, RequestReceived

# The pods in the large-message capture (session2-large-*) carry no profile
# annotation. The Go stub fell back to "default" there, which our plugin
# does with on_missing_profile = "default".
CONFIGS = {
    "session1": PluginConfig(runtime_handlers=("nono-runc",), allowed_profiles=("default", "strict")),
    "session2-large": PluginConfig(
        runtime_handlers=("nono-runc",), allowed_profiles=("default", "strict"), on_missing_profile="default"
    ),
    "session3-containerd": PluginConfig(runtime_handlers=("nono-runc",), allowed_profiles=("default", "strict")),
}


def replay(session):
    """Feed the runtime's byte stream to a plugin session; return {stream id: (request, reply frame bytes)}."""
    plugin = Plugin(CONFIGS[session])
    handlers = plugin.new_session()
    connection = Connection.for_plugin()
    connection.send_request("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", b"")
    answered = {}
    for event in connection.receive_data(stream(session, RUNTIME_TO_PLUGIN)):
        if isinstance(event, RequestReceived):
            outcome = handlers.dispatcher.dispatch(event.request.service, event.request.method, event.request.payload)
            answered[event.stream_id] = (
                event.request,
                connection.send_response(event.stream_id, outcome.payload, outcome.status),
            )
    return answered


def reply_of(frame: bytes) -> ttrpc_pb2.Response:
    # Every reply here fits one frame of at most 4096 bytes, except the
    # CreateContainer reply of the large-message capture.
    body = b""
    position = 0
    while position < len(frame):
        length = int.from_bytes(frame[position + 4 : position + 8], "big")
        body += frame[position + 8 : position + 8 + length]
        position += 8 + length
    return ttrpc_pb2.Response.FromString(body[10:])


def captured_replies(session):
    return {
        m.stream_id: m
        for m in messages(session)
        if m.conn == 1 and m.type == "response"
    }


@pytest.mark.parametrize("session", SESSIONS)
def test_replay_every_request_answered(session):
    answered = replay(session)
    requests = [m for m in messages(session) if m.conn == 1 and m.type == "request"]
    assert sorted(answered) == sorted(m.stream_id for m in requests)


@pytest.mark.parametrize("session", SESSIONS)
def test_replay_empty_replies_identical(session):
    answered = replay(session)
    captured = captured_replies(session)
    compared = 0
    for stream_id, (request, frame) in answered.items():
        expected = captured[stream_id]
        if request.method in ("Synchronize", "StateChange", "StopContainer"):
            assert expected.payload == b""
            assert frame == bytes.fromhex("000000010000000a") + bytes.fromhex("00000000") + stream_id.to_bytes(
                4, "big"
            ) + bytes.fromhex("0200")
            compared += 1
    assert compared >= 2


@pytest.mark.parametrize("session", SESSIONS)
def test_replay_configure_mask_explicit(session):
    answered = replay(session)
    (request, frame) = answered[1]
    assert request.method == "Configure"
    reply = reply_of(frame)
    assert not reply.HasField("status")
    events = api_pb2.ConfigureResponse.FromString(reply.payload).events
    assert events != 0
    assert events & BASE_EVENTS == BASE_EVENTS
    assert events & ~0x3FFF == 0


@pytest.mark.parametrize("session", SESSIONS)
def test_replay_create_container_matches_capture(session):
    answered = replay(session)
    captured = captured_replies(session)
    creates = [(sid, frame) for sid, (request, frame) in answered.items() if request.method == "CreateContainer"]
    assert creates
    for stream_id, frame in creates:
        reply = reply_of(frame)
        expected = captured[stream_id]
        if expected.status is not None:
            assert reply.status.code == expected.status["code"]
            assert reply.payload == b""
            continue
        assert not reply.HasField("status")
        ours = api_pb2.CreateContainerResponse.FromString(reply.payload)
        theirs = api_pb2.CreateContainerResponse.FromString(expected.payload)
        # Ours claims args with the leading "" override marker.
        assert list(ours.adjust.args) == ["", *theirs.adjust.args]


def test_replay_large_reply_split_into_4096_frames():
    answered = replay("session2-large")
    (frame,) = [frame for request, frame in answered.values() if request.method == "CreateContainer"]
    position = 0
    lengths = []
    while position < len(frame):
        length = int.from_bytes(frame[position + 4 : position + 8], "big")
        lengths.append(length)
        position += 8 + length
    assert len(lengths) >= 2
    assert max(lengths) == 4096
