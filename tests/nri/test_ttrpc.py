"""ttrpc framing and call bookkeeping, with literal bytes from the captured sessions."""

import tracemalloc

import pytest

from kubefence.nri import ttrpc_pb2
from kubefence.nri.errors import LocalProtocolError, RemoteProtocolError
from kubefence.nri.ttrpc import (
    MAX_MESSAGE_LENGTH,
    Connection,
    InvalidRequestReceived,
    Message,
    MessageReader,
    RequestReceived,
    ResponseReceived,
    encode_message,
)

# tests/data/nri-wire session1 frames, as the captured peers wrote them.
REGISTER_FRAME = bytes.fromhex(
    "000000020000004a000000400000000101000a1c6e72692e706b672e6170692e7631616c706861312e52756e74696d65"
    "120e5265676973746572506c7567696e1a0a0a046e6f6e6f1202313020cd9cedcf12"
)
REGISTER_PAYLOAD = bytes.fromhex("0a046e6f6e6f12023130")
CONFIGURE_FRAME = bytes.fromhex(
    "00000001000000540000004a0000000101000a1b6e72692e706b672e6170692e7631616c706861312e506c7567696e"
    "1209436f6e6669677572651a1a120a636f6e7461696e6572641a0676322e322e3220882728d00f20b3d5cdb907"
)
CONFIGURE_REPLY_FRAME = bytes.fromhex("000000010000000f00000005000000010200120310c90c")
REJECT_REPLY_FRAME = bytes.fromhex(
    "00000001000000550000004b0000000d02000a49080212456e6f6e6f2d737475623a2072656a656374696e6720636f6e"
    "7461696e6572206576696c2028706f6420616e6e6f746174696f6e206e6f6e6f2d737475622f72656a65637429"
)
EMPTY_REPLY_STREAM_3 = bytes.fromhex("000000010000000a00000000000000030200")


def test_encode_message_empty_response():
    assert encode_message(3, 2, b"") == bytes.fromhex("00000000000000030200")


def test_encode_message_over_limit_raises():
    with pytest.raises(LocalProtocolError, match="4194304"):
        encode_message(1, 2, bytes(MAX_MESSAGE_LENGTH + 1))


def feed_whole(reader, data):
    return reader.receive_data(data)


def feed_bytewise(reader, data):
    messages = []
    for index in range(len(data)):
        messages += reader.receive_data(data[index : index + 1])
    return messages


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_message_reader_two_messages(feed):
    data = CONFIGURE_FRAME[8:] + EMPTY_REPLY_STREAM_3[8:]
    messages = feed(MessageReader(), data)
    assert messages == [
        Message(stream_id=1, type=1, flags=0, body=CONFIGURE_FRAME[18:]),
        Message(stream_id=3, type=2, flags=0, body=b""),
    ]


def test_message_reader_extra_bytes_kept_for_next_call():
    reader = MessageReader()
    messages = reader.receive_data(EMPTY_REPLY_STREAM_3[8:] + CONFIGURE_FRAME[8:20])
    assert messages == [Message(3, 2, 0, b"")]
    messages = reader.receive_data(CONFIGURE_FRAME[20:])
    assert messages == [Message(1, 1, 0, CONFIGURE_FRAME[18:])]


def test_message_reader_largest_message_accepted():
    reader = MessageReader()
    header = MAX_MESSAGE_LENGTH.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([1, 0])
    assert reader.receive_data(header) == []
    body = bytes(MAX_MESSAGE_LENGTH)
    messages = reader.receive_data(body)
    assert len(messages) == 1
    assert len(messages[0].body) == MAX_MESSAGE_LENGTH


@pytest.mark.parametrize("length", [MAX_MESSAGE_LENGTH + 1, 0xFFFFFFFF], ids=["limit+1", "uint32-max"])
def test_message_reader_oversize_length_raises_without_allocating(length):
    reader = MessageReader()
    header = length.to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes([1, 0])
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match=str(length)):
            reader.receive_data(header + b"abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_connection_send_request_matches_captured_register():
    connection = Connection.for_plugin()
    stream_id, data = connection.send_request(
        "nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", REGISTER_PAYLOAD, timeout_nano=4999302733
    )
    assert stream_id == 1
    assert data == REGISTER_FRAME


def test_connection_stream_ids_odd_from_one():
    connection = Connection.for_plugin()
    ids = [connection.send_request("s", "m", b"")[0] for _ in range(4)]
    assert ids == [1, 3, 5, 7]


def test_connection_send_response_matches_captured_configure_reply():
    assert Connection.for_plugin().send_response(1, bytes.fromhex("10c90c")) == CONFIGURE_REPLY_FRAME


def test_connection_send_response_matches_captured_error():
    message = "nono-stub: rejecting container evil (pod annotation nono-stub/reject)"
    assert Connection.for_plugin().send_response(13, status=(2, message)) == REJECT_REPLY_FRAME


def test_connection_send_response_empty_is_header_only():
    assert Connection.for_plugin().send_response(3) == EMPTY_REPLY_STREAM_3


def test_connection_send_response_over_4096_split():
    data = Connection.for_plugin().send_response(7, bytes(7655))
    assert data[:8] == bytes.fromhex("0000000100001000")
    assert len(data) == 8 + 4096 + 8 + (10 + 3 + 7655 - 4096)


@pytest.mark.parametrize("chunk", [1, 7, 4096, None], ids=["bytewise", "7", "4096", "whole"])
def test_connection_receive_request(chunk):
    connection = Connection.for_plugin()
    data = CONFIGURE_FRAME + b"\x00\x00"  # extra bytes: the start of a next frame
    events = []
    step = chunk or len(data)
    for start in range(0, len(data), step):
        events += connection.receive_data(data[start : start + step])
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, RequestReceived)
    assert event.stream_id == 1
    assert event.request.service == "nri.pkg.api.v1alpha1.Plugin"
    assert event.request.method == "Configure"
    assert event.request.timeout_nano == 1999858355


def test_connection_receive_response_to_own_call():
    connection = Connection.for_plugin()
    connection.send_request("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", REGISTER_PAYLOAD)
    events = connection.receive_data(bytes.fromhex("000000020000000a00000000000000010200"))
    assert len(events) == 1
    assert isinstance(events[0], ResponseReceived)
    assert not events[0].response.HasField("status")
    assert connection.pending_calls == set()


def test_connection_receive_stray_response_dropped():
    connection = Connection.for_plugin()
    events = connection.receive_data(bytes.fromhex("000000020000000a00000000000000090200"))
    assert events == []
    assert connection.stray_responses == 1


def test_connection_receive_even_stream_id_raises():
    connection = Connection.for_plugin()
    frame = bytearray(CONFIGURE_FRAME)
    frame[8 + 7] = 2
    with pytest.raises(RemoteProtocolError, match="stream id 2"):
        connection.receive_data(bytes(frame))


def test_connection_receive_reused_stream_id_raises():
    connection = Connection.for_plugin()
    connection.receive_data(CONFIGURE_FRAME)
    with pytest.raises(RemoteProtocolError, match="stream id 1"):
        connection.receive_data(CONFIGURE_FRAME)


def test_connection_receive_request_on_wrong_conn_raises():
    connection = Connection.for_plugin()
    frame = bytearray(CONFIGURE_FRAME)
    frame[3] = 2
    with pytest.raises(RemoteProtocolError, match="conn 2"):
        connection.receive_data(bytes(frame))


def test_connection_receive_data_message_raises():
    connection = Connection.for_plugin()
    body = b""
    frame = (1).to_bytes(4, "big") + (10).to_bytes(4, "big") + encode_message(1, 3, body)
    with pytest.raises(RemoteProtocolError, match="type 3"):
        connection.receive_data(frame)


def test_connection_receive_undecodable_request_reported():
    connection = Connection.for_plugin()
    body = b"\x0a\xff"  # field 1, length 255, but nothing follows
    frame = (1).to_bytes(4, "big") + (10 + len(body)).to_bytes(4, "big") + encode_message(1, 1, body)
    events = connection.receive_data(frame)
    assert len(events) == 1
    assert isinstance(events[0], InvalidRequestReceived)
    assert events[0].stream_id == 1


def test_connection_runtime_side_round_trip():
    plugin = Connection.for_plugin()
    runtime = Connection.for_runtime(max_send_payload=1 << 30)
    stream_id, data = runtime.send_request("svc", "Method", b"p" * 10000, timeout_nano=5)
    (event,) = plugin.receive_data(data)
    assert event.request.payload == b"p" * 10000
    (reply,) = runtime.receive_data(plugin.send_response(event.stream_id, b"r" * 9000))
    assert reply.stream_id == stream_id
    assert reply.response.payload == b"r" * 9000


def test_connection_invalid_conn_pair_raises():
    with pytest.raises(ValueError, match="serve=1 call=1"):
        Connection(serve_conn=1, call_conn=1)


def test_response_status_absent_on_success():
    assert ttrpc_pb2.Response(payload=b"").SerializeToString() == b""
