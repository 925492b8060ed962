"""Read the captured NRI sessions in tests/data/nri-wire."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

CAPTURE_DIR = Path(__file__).parent.parent / "data" / "nri-wire"
SESSIONS = ("session1", "session2-large", "session3-containerd")

RUNTIME_TO_PLUGIN = "runtime->plugin"
PLUGIN_TO_RUNTIME = "plugin->runtime"


@dataclass(frozen=True)
class CapturedMessage:
    """One line of a *-messages.txt file."""

    number: str
    direction: str
    conn: int
    stream_id: int
    type: str
    service: str
    method: str
    reply_to: str
    status: dict | None
    payload_type: str
    payload: bytes
    decoded: dict


def chunks(session: str) -> list[tuple[str, bytes]]:
    """Return (direction, bytes) per recv() chunk, EOF lines left out."""
    result = []
    for line in (CAPTURE_DIR / f"{session}-chunks.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[4] == "EOF":
            continue
        result.append((fields[3], bytes.fromhex(fields[5])))
    return result


def stream(session: str, direction: str) -> bytes:
    return b"".join(data for chunk_direction, data in chunks(session) if chunk_direction == direction)


def frames(session: str) -> list[tuple[str, int, int]]:
    """Return (direction, conn id, payload length) per captured frame."""
    result = []
    for line in (CAPTURE_DIR / f"{session}-frames.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        direction = line.split()[3]
        conn = int(re.search(r"mux_conn=(\d+)", line).group(1))
        length = int(re.search(r"mux_len=(\d+)", line).group(1))
        result.append((direction, conn, length))
    return result


def messages(session: str) -> list[CapturedMessage]:
    result = []
    for line in (CAPTURE_DIR / f"{session}-messages.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        head = parts[0].split()
        envelope = parts[3]
        status = None
        match = re.search(r"status=(\{.*\})", envelope)
        if match:
            status = json.loads(match.group(1))
        service = re.search(r"service=(\S+)", envelope)
        method = re.search(r"method=(\S+)", envelope)
        reply_to = re.search(r"reply_to=(\S+)", envelope)
        payload_type = re.search(r"payload_type=(\S+)", parts[4]).group(1)
        payload_hex = re.search(r"payload_hex=([0-9a-f]*)", parts[4]).group(1)
        decoded = json.loads(parts[5].removeprefix("decoded="))
        result.append(
            CapturedMessage(
                number=head[0],
                direction=head[4],
                conn=int(parts[1].removeprefix("mux_conn=")),
                stream_id=int(re.search(r"stream=(\d+)", parts[2]).group(1)),
                type=re.search(r"type=(\w+)", parts[2]).group(1),
                service=service.group(1) if service else "",
                method=method.group(1) if method else "",
                reply_to=reply_to.group(1) if reply_to else "",
                status=status,
                payload_type=payload_type,
                payload=bytes.fromhex(payload_hex),
                decoded=decoded,
            )
        )
    return result
