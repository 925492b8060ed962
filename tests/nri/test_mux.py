"""Multiplexer framing, with literal bytes fed whole, byte by byte and with extra bytes after."""

import pytest

from kubefence.nri.errors import LocalProtocolError, RemoteProtocolError
from kubefence.nri.mux import MAX_FRAME_PAYLOAD, Multiplexer

# tests/data/nri-wire session1, frame F006: the plugin's empty Synchronize reply on conn 1.
SYNC_REPLY_FRAME = bytes.fromhex("000000010000000a" "00000000000000030200")
# tests/data/nri-wire session1, frames F002 + F003 as one recv(): conn 2 reply, then conn 1 Configure.
REGISTER_REPLY_AND_CONFIGURE = bytes.fromhex(
    "000000020000000a00000000000000010200"
    "0000000100000054"
    "0000004a0000000101000a1b6e72692e706b672e6170692e7631616c706861312e506c7567696e1209436f6e66696775"
    "72651a1a120a636f6e7461696e6572641a0676322e322e3220882728d00f20b3d5cdb907"
)


def joined(pieces):
    streams = {}
    for conn_id, data in pieces:
        streams[conn_id] = streams.get(conn_id, b"") + data
    return streams


def feed_whole(data):
    return joined(Multiplexer().receive_data(data))


def feed_bytewise(data):
    mux = Multiplexer()
    pieces = []
    for index in range(len(data)):
        pieces += mux.receive_data(data[index : index + 1])
    return joined(pieces)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_multiplexer_receive_splits_conns(feed):
    streams = feed(REGISTER_REPLY_AND_CONFIGURE)
    assert streams[2] == bytes.fromhex("00000000000000010200")
    assert streams[1] == REGISTER_REPLY_AND_CONFIGURE[18 + 8 :]
    assert len(streams[1]) == 0x54


def test_multiplexer_receive_extra_bytes_wait_for_rest():
    mux = Multiplexer()
    # A whole frame, then the first 5 bytes of the next frame's header.
    pieces = mux.receive_data(SYNC_REPLY_FRAME + bytes.fromhex("0000000100"))
    assert joined(pieces) == {1: SYNC_REPLY_FRAME[8:]}
    pieces = mux.receive_data(bytes.fromhex("000003") + b"abc")
    assert joined(pieces) == {1: b"abc"}


def test_multiplexer_receive_header_alone_then_payload():
    # Go writes the header and the payload with separate write() calls.
    mux = Multiplexer()
    assert mux.receive_data(SYNC_REPLY_FRAME[:8]) == []
    assert joined(mux.receive_data(SYNC_REPLY_FRAME[8:])) == {1: SYNC_REPLY_FRAME[8:]}


def test_multiplexer_receive_message_across_frames_is_one_stream():
    payload = bytes(range(256)) * 40
    data = b"".join(
        [
            bytes.fromhex("0000000100001000") + payload[:4096],
            bytes.fromhex("00000002") + (3).to_bytes(4, "big") + b"xyz",
            bytes.fromhex("00000001") + (len(payload) - 4096).to_bytes(4, "big") + payload[4096:],
        ]
    )
    assert feed_whole(data) == {1: payload, 2: b"xyz"}
    assert feed_bytewise(data) == {1: payload, 2: b"xyz"}


def test_multiplexer_receive_conn_zero_raises():
    mux = Multiplexer()
    with pytest.raises(RemoteProtocolError, match="reserved conn id 0"):
        mux.receive_data(bytes.fromhex("0000000000000002") + b"hi")
    # The connection stays failed.
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(SYNC_REPLY_FRAME)


def test_multiplexer_receive_oversize_frame_raises_before_payload():
    mux = Multiplexer()
    header = (1).to_bytes(4, "big") + (MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match=str(MAX_FRAME_PAYLOAD + 1)):
        mux.receive_data(header)


def test_multiplexer_receive_largest_frame_accepted():
    mux = Multiplexer()
    header = (1).to_bytes(4, "big") + MAX_FRAME_PAYLOAD.to_bytes(4, "big")
    assert mux.receive_data(header) == []


def test_multiplexer_receive_unknown_conn_dropped():
    mux = Multiplexer()
    data = bytes.fromhex("0000000700000003") + b"abc" + SYNC_REPLY_FRAME
    assert joined(mux.receive_data(data)) == {1: SYNC_REPLY_FRAME[8:]}
    assert mux.dropped_frames == 1


def test_multiplexer_send_small_message_one_frame():
    assert Multiplexer().send_data(1, SYNC_REPLY_FRAME[8:]) == SYNC_REPLY_FRAME


@pytest.mark.parametrize("size", [4096, 4097, 7668, 12706, 3 * 4096], ids=str)
def test_multiplexer_send_splits_at_4096(size):
    data = bytes(index % 251 for index in range(size))
    framed = Multiplexer().send_data(1, data)
    position = 0
    lengths = []
    payload = b""
    while position < len(framed):
        conn_id = int.from_bytes(framed[position : position + 4], "big")
        length = int.from_bytes(framed[position + 4 : position + 8], "big")
        assert conn_id == 1
        lengths.append(length)
        payload += framed[position + 8 : position + 8 + length]
        position += 8 + length
    assert payload == data
    assert max(lengths) <= 4096
    assert lengths[:-1] == [4096] * (len(lengths) - 1)


def test_multiplexer_send_captured_large_reply_frames():
    # tests/data/nri-wire session2-large: the Go stub sent its 7,668-byte reply as 4096 + 3572 bytes.
    framed = Multiplexer().send_data(1, bytes(7668))
    assert framed[:8] == bytes.fromhex("0000000100001000")
    assert framed[8 + 4096 : 16 + 4096] == bytes.fromhex("0000000100000df4")


def test_multiplexer_send_unknown_conn_raises():
    with pytest.raises(LocalProtocolError, match="conn 3"):
        Multiplexer().send_data(3, b"x")
