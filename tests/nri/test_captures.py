"""Every captured frame and message decodes with our layers and schema."""

import pytest
from .captures import PLUGIN_TO_RUNTIME, RUNTIME_TO_PLUGIN, SESSIONS, chunks, frames, messages, stream

from kubefence.nri import api_pb2, ttrpc_pb2
from kubefence.nri.mux import Multiplexer
from kubefence.nri.ttrpc import MessageReader


def decode_stream(data: bytes, *, bytewise: bool = False):
    mux = Multiplexer()
    readers = {1: MessageReader(), 2: MessageReader()}
    decoded = []
    pieces = []
    if bytewise:
        for index in range(len(data)):
            pieces += mux.receive_data(data[index : index + 1])
    else:
        pieces = mux.receive_data(data)
    for conn_id, piece in pieces:
        for message in readers[conn_id].receive_data(piece):
            decoded.append((conn_id, message))
    return decoded


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("direction", [RUNTIME_TO_PLUGIN, PLUGIN_TO_RUNTIME])
def test_capture_messages_decode_in_order(session, direction):
    expected = [m for m in messages(session) if m.direction == direction]
    decoded = decode_stream(stream(session, direction))
    assert [(conn, m.stream_id) for conn, m in decoded] == [(m.conn, m.stream_id) for m in expected]
    for (conn, message), captured in zip(decoded, expected):
        if captured.type == "request":
            assert message.type == 1
            request = ttrpc_pb2.Request.FromString(message.body)
            assert request.service == captured.service
            assert request.method == captured.method
            assert request.payload == captured.payload
        else:
            assert message.type == 2
            response = ttrpc_pb2.Response.FromString(message.body)
            assert response.payload == captured.payload
            if captured.status is None:
                assert not response.HasField("status")
            else:
                assert response.status.code == captured.status["code"]
                assert response.status.message == captured.status["message"]


@pytest.mark.parametrize("session", SESSIONS)
def test_capture_bytewise_same_as_whole(session):
    data = stream(session, RUNTIME_TO_PLUGIN)
    assert decode_stream(data, bytewise=True) == decode_stream(data)


@pytest.mark.parametrize("session", SESSIONS)
def test_capture_frame_lengths_match(session):
    for direction in (RUNTIME_TO_PLUGIN, PLUGIN_TO_RUNTIME):
        data = stream(session, direction)
        lengths = []
        position = 0
        while position < len(data):
            conn = int.from_bytes(data[position : position + 4], "big")
            length = int.from_bytes(data[position + 4 : position + 8], "big")
            lengths.append((conn, length))
            position += 8 + length
        expected = [(conn, length) for d, conn, length in frames(session) if d == direction]
        assert lengths == expected


@pytest.mark.parametrize("session", SESSIONS)
def test_capture_plugin_frames_fit_4096(session):
    for direction, _, length in frames(session):
        if direction == PLUGIN_TO_RUNTIME:
            assert length <= 4096


def _payload_type(name: str):
    return getattr(api_pb2, name)


@pytest.mark.parametrize("session", SESSIONS)
def test_capture_payloads_decode_with_our_schema(session):
    for captured in messages(session):
        message_type = _payload_type(captured.payload_type)
        message = message_type.FromString(captured.payload)
        # Known fields re-encode to the same bytes when the Go side wrote
        # them in field order; map entries come first-to-last as captured.
        assert message.ByteSize() == len(captured.payload)


def test_capture_synchronize_session1_contents():
    (sync,) = [m for m in messages("session1") if m.method == "Synchronize"]
    request = api_pb2.SynchronizeRequest.FromString(sync.payload)
    assert [pod.runtime_handler for pod in request.pods] == ["runc"]
    assert list(request.containers[0].args) == ["sleep", "inf"]
    assert request.containers[0].state == api_pb2.CONTAINER_RUNNING
    assert request.more is False


def test_capture_create_session3_contents():
    (create,) = [m for m in messages("session3-containerd") if m.method == "CreateContainer"]
    request = api_pb2.CreateContainerRequest.FromString(create.payload)
    assert request.pod.runtime_handler == "nono-runc"
    assert request.pod.annotations["nono.sh/profile"] == "strict"
    assert list(request.container.args) == ["/bin/sleep", "3600"]
    assert "HOSTNAME=vm" in request.container.env
    assert any(mount.destination == "/proc" for mount in request.container.mounts)


def test_capture_chunks_include_lone_headers():
    # The Go writer sends header and payload separately; a lone 8-byte header was captured.
    assert any(len(data) == 8 for _, data in chunks("session1"))
