"""Exceptions of the NRI protocol layers.

    ProtocolError                 the byte stream cannot be used any more
    ├── RemoteProtocolError       the peer broke the protocol (bad frame, oversize length)
    └── LocalProtocolError        we were asked to send something the protocol forbids
    RpcError                      one call failed; carries a ttrpc status code

A ProtocolError ends the connection: the caller closes the socket and, on
the plugin side, connects again. An RpcError ends only the call it belongs
to: the service layer turns it into a ttrpc status and the connection stays
open.
"""


class ProtocolError(Exception):
    """The multiplexed byte stream is broken and the connection must be closed."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the multiplexer or ttrpc framing."""


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol does not allow."""


class RpcError(Exception):
    """A failed call, answered with a ttrpc status (google.rpc.Status code and message)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError(code={self.code!r}, message={self.message!r})"
