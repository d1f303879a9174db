"""A minimal WebSocket client for the load benchmarks: the handshake, then server frames
parsed with as little Python as possible, so that on a 2-core machine the load client
leaves the CPU to the server it measures (the `websockets` client cost about as much CPU
per message as the server did). Text frames only, no extensions, no fragmentation (the
server sends neither)."""

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec


class Message(msgspec.Struct):
    """The fields of a server message the benchmarks look at."""

    type: str
    seq: int | None = None
    message: str | None = None
    error: str | None = None
    total_candles: int | None = None
    candles: list[msgspec.Raw] | None = None  # a CANDLES frame (batch=N)


decode = msgspec.json.Decoder(Message).decode


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class _Protocol(asyncio.Protocol):
    def __init__(
        self, on_text: Callable[[bytes, float], None], on_open: Callable[[float], None]
    ) -> None:
        self.on_text = on_text
        self.on_open = on_open
        self.buffer = bytearray()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.handshake.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded = True
            self.on_open(now)  # before the frames that came with the handshake
            self.handshake.set_result(None)
        buffer = self.buffer
        at = 0
        while len(buffer) - at >= 2:
            opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, at + 2)
                header = 4
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, at + 2)
                header = 10
            if len(buffer) - at < header + length:
                break
            payload = bytes(buffer[at + header : at + header + length])
            at += header + length
            if opcode == 1:
                self.on_text(payload, now)
            elif opcode == 9:  # ping: the server closes a client that does not answer
                self.send(10, payload)
            elif opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self.send(8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(head + mask + masked)


class Client:
    """One WebSocket connection. `on_text(payload, arrival)` sees each text frame."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def connect(
        cls,
        url: str,
        on_text: Callable[[bytes, float], None],
        on_open: Callable[[float], None] = lambda now: None,
    ) -> "Client":
        """Connected once the handshake is done; `on_open(now)` runs when its answer
        arrives, before any frame that came with it."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _Protocol(on_text, on_open), parts.hostname, parts.port
        )
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert protocol.transport is not None
        protocol.transport.write(request.encode())
        await protocol.handshake
        return cls(protocol)

    def send_text(self, text: str) -> None:
        self._protocol.send(1, text.encode())

    async def wait_closed(self) -> int | None:
        return await self._protocol.closed

    def close(self) -> None:
        self._protocol.send(8, struct.pack("!H", 1000))

    def abort(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.abort()

    def pause_reading(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.pause_reading()
