"""ttrpc framing and call bookkeeping over the NRI multiplexer, without I/O.

A ttrpc message is a 10-byte header followed by `length` body bytes:

    length     uint32 big-endian, body bytes only
    stream_id  uint32 big-endian, odd, chosen by the calling side
    type       uint8, 1 = request, 2 = response
    flags      uint8, 0 for plain calls

A request body is `ttrpc.Request` (service, method, payload, timeout_nano,
metadata); a response body is `ttrpc.Response` (status, payload). A
successful response has no status, and a successful empty reply has an
empty body.

`Connection` is one end of an NRI socket: it serves calls on one conn and
makes calls on the other. The plugin serves conn 1 and calls on conn 2;
the runtime side does the opposite. Feed it received bytes with
`receive_data` and write what `send_request` and `send_response` return.

Limits: a message may be at most 4 MiB (4,194,304 bytes), the limit of the
Go ttrpc library. A received header that declares more raises
RemoteProtocolError before any body byte is stored.

Known limitations: ttrpc streaming (message type 3, stream flags) is not
supported; NRI does not use it. A received data message raises
RemoteProtocolError.
"""

import struct
from dataclasses import dataclass

from kubefence.nri import ttrpc_pb2
from kubefence.nri.errors import LocalProtocolError, RemoteProtocolError
from kubefence.nri.mux import (
    MAX_FRAME_PAYLOAD,
    MAX_PLUGIN_FRAME_PAYLOAD,
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE_CONN,
    Multiplexer,
)

MESSAGE_HEADER = struct.Struct(">IIBB")
MESSAGE_HEADER_LENGTH = MESSAGE_HEADER.size
MAX_MESSAGE_LENGTH = 4 * 1024 * 1024

MESSAGE_TYPE_REQUEST = 1
MESSAGE_TYPE_RESPONSE = 2
MESSAGE_TYPE_DATA = 3

# google.rpc status codes used by ttrpc.
OK = 0
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13


@dataclass(frozen=True, slots=True)
class Message:
    """One ttrpc message as read from a conn's byte stream."""

    stream_id: int
    type: int
    flags: int
    body: bytes


def encode_message(stream_id: int, message_type: int, body: bytes, flags: int = 0) -> bytes:
    """Return the header and body of one ttrpc message."""
    if len(body) > MAX_MESSAGE_LENGTH:
        raise LocalProtocolError(
            f"ttrpc message of {len(body)!r} bytes on stream {stream_id!r} exceeds the "
            f"{MAX_MESSAGE_LENGTH!r}-byte limit"
        )
    return MESSAGE_HEADER.pack(len(body), stream_id, message_type, flags) + body


class MessageReader:
    """Reassemble ttrpc messages from one conn's byte stream."""

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH):
        self.max_length = max_length
        self._buffer = bytearray()
        # Header of the message whose body is being collected, or None.
        self._pending: tuple[int, int, int, int] | None = None

    def receive_data(self, data: bytes) -> list[Message]:
        """Consume bytes of this conn and return the messages they complete."""
        buffer = self._buffer
        buffer += data
        messages = []
        position = 0
        while True:
            if self._pending is None:
                if len(buffer) - position < MESSAGE_HEADER_LENGTH:
                    break
                header = MESSAGE_HEADER.unpack_from(buffer, position)
                position += MESSAGE_HEADER_LENGTH
                length = header[0]
                if length > self.max_length:
                    # Checked before any body byte is kept.
                    del buffer[:]
                    raise RemoteProtocolError(
                        f"ttrpc message on stream {header[1]!r} declares {length!r} bytes; "
                        f"the maximum is {self.max_length!r}"
                    )
                self._pending = header
            length, stream_id, message_type, flags = self._pending
            if len(buffer) - position < length:
                break
            body = bytes(buffer[position : position + length])
            position += length
            self._pending = None
            messages.append(Message(stream_id, message_type, flags, body))
        if position:
            del buffer[:position]
        return messages


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """The peer called a method on the conn this side serves."""

    stream_id: int
    request: ttrpc_pb2.Request


@dataclass(frozen=True, slots=True)
class InvalidRequestReceived:
    """The peer sent a request whose envelope does not decode, to be rejected with status 3."""

    stream_id: int
    error: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The peer replied to a call this side made."""

    stream_id: int
    response: ttrpc_pb2.Response


Event = RequestReceived | InvalidRequestReceived | ResponseReceived


class Connection:
    """One end of an NRI socket: serves calls on `serve_conn` and makes calls on `call_conn`.

    A reconnect needs a new Connection, so stream ids start again at 1 and
    no call from the old socket gets a reply on the new one.
    """

    def __init__(
        self,
        *,
        serve_conn: int,
        call_conn: int,
        max_send_payload: int = MAX_PLUGIN_FRAME_PAYLOAD,
        max_receive_payload: int = MAX_FRAME_PAYLOAD,
        max_message_length: int = MAX_MESSAGE_LENGTH,
    ):
        if {serve_conn, call_conn} != {PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN}:
            raise ValueError(
                f"invalid conn pair serve={serve_conn!r} call={call_conn!r}; expected 1 and 2 in either order"
            )
        self.serve_conn = serve_conn
        self.call_conn = call_conn
        self.mux = Multiplexer(max_send_payload=max_send_payload, max_receive_payload=max_receive_payload)
        self._readers = {
            serve_conn: MessageReader(max_message_length),
            call_conn: MessageReader(max_message_length),
        }
        self._next_stream_id = 1
        self._last_peer_stream_id = 0
        self.pending_calls: set[int] = set()
        # Responses for streams this side never opened (dropped, as ttrpc does).
        self.stray_responses = 0

    @classmethod
    def for_plugin(cls, **options) -> "Connection":
        return cls(serve_conn=PLUGIN_SERVICE_CONN, call_conn=RUNTIME_SERVICE_CONN, **options)

    @classmethod
    def for_runtime(cls, **options) -> "Connection":
        return cls(serve_conn=RUNTIME_SERVICE_CONN, call_conn=PLUGIN_SERVICE_CONN, **options)

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume bytes read from the socket and return the calls and replies they complete."""
        events: list[Event] = []
        for conn_id, piece in self.mux.receive_data(data):
            for message in self._readers[conn_id].receive_data(piece):
                event = self._accept(conn_id, message)
                if event is not None:
                    events.append(event)
        return events

    def _accept(self, conn_id: int, message: Message) -> Event | None:
        if message.type == MESSAGE_TYPE_REQUEST:
            if conn_id != self.serve_conn:
                raise RemoteProtocolError(
                    f"ttrpc request on conn {conn_id!r}, which this side does not serve"
                )
            if message.stream_id % 2 == 0 or message.stream_id <= self._last_peer_stream_id:
                raise RemoteProtocolError(
                    f"ttrpc request with stream id {message.stream_id!r}; expected an odd id "
                    f"above {self._last_peer_stream_id!r}"
                )
            self._last_peer_stream_id = message.stream_id
            try:
                request = ttrpc_pb2.Request.FromString(message.body)
            except Exception as error:  # protobuf raises DecodeError, sometimes others
                return InvalidRequestReceived(message.stream_id, f"unmarshal request error: {error}")
            return RequestReceived(message.stream_id, request)

        if message.type == MESSAGE_TYPE_RESPONSE:
            if conn_id != self.call_conn or message.stream_id not in self.pending_calls:
                self.stray_responses += 1
                return None
            self.pending_calls.discard(message.stream_id)
            try:
                response = ttrpc_pb2.Response.FromString(message.body)
            except Exception as error:
                raise RemoteProtocolError(
                    f"ttrpc response on stream {message.stream_id!r} does not decode: {error}"
                ) from error
            return ResponseReceived(message.stream_id, response)

        raise RemoteProtocolError(
            f"ttrpc message type {message.type!r} on stream {message.stream_id!r} is not supported; "
            "expected 1 (request) or 2 (response)"
        )

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout_nano: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> tuple[int, bytes]:
        """Start a call on `call_conn` and return its stream id and the bytes to write."""
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        request = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        for key, value in metadata:
            request.metadata.add(key=key, value=value)
        data = encode_message(stream_id, MESSAGE_TYPE_REQUEST, request.SerializeToString())
        self.pending_calls.add(stream_id)
        return stream_id, self.mux.send_data(self.call_conn, data)

    def send_response(self, stream_id: int, payload: bytes = b"", status: tuple[int, str] | None = None) -> bytes:
        """Return the bytes that reply to call `stream_id` with `payload`, or with an error `status`."""
        if status is None:
            body = ttrpc_pb2.Response(payload=payload).SerializeToString()
        else:
            code, message = status
            body = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message)).SerializeToString()
        if len(body) > MAX_MESSAGE_LENGTH:
            # As ttrpc servers do: the caller gets a status instead of a frame it cannot read.
            body = ttrpc_pb2.Response(
                status=ttrpc_pb2.Status(
                    code=RESOURCE_EXHAUSTED,
                    message=f"reply of {len(body)} bytes exceeds the {MAX_MESSAGE_LENGTH}-byte message limit",
                )
            ).SerializeToString()
        return self.mux.send_data(self.serve_conn, encode_message(stream_id, MESSAGE_TYPE_RESPONSE, body))
