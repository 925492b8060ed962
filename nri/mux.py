"""The NRI connection multiplexer, without I/O.

NRI runs two ttrpc connections over one unix stream socket. Every frame is
an 8-byte header, `conn_id` then `length` (both uint32, big-endian),
followed by exactly `length` payload bytes:

* conn 1 carries the Plugin service: the runtime calls, the plugin replies;
* conn 2 carries the Runtime service: the plugin calls, the runtime replies;
* conn 0 is reserved and never valid.

Each direction of each conn is a byte stream. Frame boundaries need not
match ttrpc message boundaries, so `Multiplexer.receive_data` hands out
payload bytes per conn as they arrive and the ttrpc layer reassembles
messages. A frame is never buffered whole, so a large declared length
costs no memory up front.

Limits:

* frames this side sends carry at most `max_send_payload` bytes. The
  containerd runtime reads each conn through a 4096-byte buffer and closes
  a plugin whose frame does not fit, so the plugin side keeps the default
  of 4096;
* a received frame may declare at most `max_receive_payload` bytes, the
  largest frame the NRI Go library writes (a 4 MiB ttrpc message plus its
  10-byte header). A larger length raises RemoteProtocolError.

Frames for a conn id other than 1 and 2 are dropped, as the Go library
does; conn id 0 raises RemoteProtocolError.
"""

import struct

from kubefence.nri.errors import LocalProtocolError, RemoteProtocolError

HEADER = struct.Struct(">II")
HEADER_LENGTH = HEADER.size

# Conn ids, named as in containerd/nri pkg/net/multiplex.
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2
KNOWN_CONNS = frozenset({PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN})

# Largest frame payload the containerd runtime accepts from a plugin.
MAX_PLUGIN_FRAME_PAYLOAD = 4096
# 4 MiB ttrpc message limit plus the 10-byte ttrpc header.
MAX_FRAME_PAYLOAD = 4 * 1024 * 1024 + 10


class Multiplexer:
    """Split a received byte stream into per-conn payload and frame outgoing data.

    One instance serves one socket connection; a new connection needs a new
    instance. After a RemoteProtocolError every later `receive_data` call
    raises the same error again.
    """

    def __init__(
        self,
        *,
        max_send_payload: int = MAX_PLUGIN_FRAME_PAYLOAD,
        max_receive_payload: int = MAX_FRAME_PAYLOAD,
    ):
        if max_send_payload < 1:
            raise ValueError(f"invalid max_send_payload {max_send_payload!r}; expected a positive byte count")
        self.max_send_payload = max_send_payload
        self.max_receive_payload = max_receive_payload
        self._header = bytearray()
        # Conn id and bytes still to come of the frame being read.
        self._conn_id = 0
        self._remaining = 0
        self._error: RemoteProtocolError | None = None
        # Frames dropped because their conn id is neither 1 nor 2.
        self.dropped_frames = 0
        # Largest payload length of any frame received so far.
        self.largest_received_frame = 0

    def receive_data(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume received bytes and return `(conn_id, payload_bytes)` pieces in order.

        Pieces of one frame may come in several calls; pieces of one conn
        are to be concatenated by the caller.
        """
        if self._error is not None:
            raise self._error
        pieces: list[tuple[int, bytes]] = []
        position = 0
        size = len(data)
        while position < size:
            if self._remaining == 0:
                # Reading a frame header, possibly split over calls.
                missing = HEADER_LENGTH - len(self._header)
                if not self._header and size - position >= HEADER_LENGTH:
                    conn_id, length = HEADER.unpack_from(data, position)
                    position += HEADER_LENGTH
                else:
                    self._header += data[position : position + missing]
                    position += min(missing, size - position)
                    if len(self._header) < HEADER_LENGTH:
                        break
                    conn_id, length = HEADER.unpack(self._header)
                    self._header.clear()
                self._start_frame(conn_id, length)
                continue

            take = min(self._remaining, size - position)
            if self._conn_id in KNOWN_CONNS:
                pieces.append((self._conn_id, data[position : position + take]))
            position += take
            self._remaining -= take
        return pieces

    def _start_frame(self, conn_id: int, length: int) -> None:
        if conn_id == 0:
            self._fail(f"multiplexer frame with reserved conn id 0 (length {length!r})")
        if length > self.max_receive_payload:
            self._fail(
                f"multiplexer frame for conn {conn_id!r} declares {length!r} payload bytes; "
                f"the maximum is {self.max_receive_payload!r}"
            )
        if conn_id not in KNOWN_CONNS:
            self.dropped_frames += 1
        if length > self.largest_received_frame:
            self.largest_received_frame = length
        self._conn_id = conn_id
        self._remaining = length

    def _fail(self, message: str) -> None:
        self._error = RemoteProtocolError(message)
        raise self._error

    def send_data(self, conn_id: int, data: bytes) -> bytes:
        """Return `data` framed for `conn_id`, cut into frames of at most `max_send_payload` bytes."""
        if conn_id not in KNOWN_CONNS:
            raise LocalProtocolError(f"cannot send on conn {conn_id!r}; expected 1 or 2")
        limit = self.max_send_payload
        if len(data) <= limit:
            return HEADER.pack(conn_id, len(data)) + data
        view = memoryview(data)
        parts = []
        for start in range(0, len(data), limit):
            chunk = view[start : start + limit]
            parts.append(HEADER.pack(conn_id, len(chunk)))
            parts.append(chunk)
        return b"".join(parts)
