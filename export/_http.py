"""The HTTP side of `export.serve`: timeouts, request bodies, gzip.

- `timed_protocol(header_timeout)`: uvicorn's h11 protocol with one more
  timer. uvicorn closes a keep-alive connection that stays idle after a
  response (`timeout_keep_alive`), but a connection that never sends a
  request, or sends its headers a byte at a time, is held for ever; the
  timer closes any connection whose next request's headers are not
  complete `header_timeout` seconds after it opened or after its last
  response.
- `read_body(request, limit, timeout)`: the whole body, or a `RestError`:
  413 past `limit` bytes (counted as they arrive, and counted again after
  gzip inflation, so a gzip bomb is a 413 too), 408 when the body takes
  longer than `timeout` seconds, 415 for a `Content-Encoding` other than
  gzip, 400 for a body that is not gzip.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._rest_json import RestError

_LOG = logging.getLogger("keras_attn.serve")
# Inflate gzip (and zlib) streams; 16 + MAX_WBITS would take gzip only.
_GZIP_WBITS = 32 + zlib.MAX_WBITS


def timed_protocol(header_timeout: float) -> type[H11Protocol]:
    """An `H11Protocol` subclass (uvicorn's `http=` setting) that closes a
    connection whose request headers are not complete within
    `header_timeout` seconds of the connection opening or of its previous
    response completing."""
    if not header_timeout > 0:
        raise ValueError(
            f"timed_protocol: header_timeout must be positive; got "
            f"{header_timeout!r}"
        )

    class TimedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc):
            self._disarm_header_timer()
            super().connection_lost(exc)

        def handle_events(self):
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a new request's headers arrived
                self._disarm_header_timer()

        def on_response_complete(self):
            # Armed first: the parent may go straight on to a pipelined
            # request, whose headers then disarm it.
            self._arm_header_timer()
            super().on_response_complete()

        def _arm_header_timer(self):
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(
                header_timeout, self._header_timed_out)

        def _disarm_header_timer(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self):
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                client = (f"{self.client[0]}:{self.client[1]}"
                          if self.client else "a client")
                _LOG.info(
                    "%s sent no complete request headers within %g s; "
                    "connection closed", client, header_timeout)
                self.transport.close()

    return TimedH11Protocol


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request's body, inflated when it is gzip; see the module."""
    encoding = request.headers.get("content-encoding", "identity")
    encoding = encoding.strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise RestError(
            415,
            f"Content-Encoding {encoding!r} is not supported; send the body "
            "as is or gzip-compressed (Content-Encoding: gzip)",
            {"Connection": "close"},
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    inflater = _Inflater(limit) if encoding != "identity" else None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            # Count what actually arrives: a chunked body has no
            # Content-Length, and a client can send more than it declared.
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(inflater.feed(chunk) if inflater else chunk)
    except TimeoutError:
        raise RestError(
            408,
            f"the request body did not arrive within {timeout:g} s "
            f"({size} bytes received); the server's --body-timeout bounds "
            "the time a client may take to send it",
            {"Connection": "close"},
        ) from None
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


def too_large(limit: int, what: str = "request body") -> RestError:
    return RestError(
        413,
        f"{what} exceeds the server's limit of {limit} bytes; send fewer "
        "instances per request or restart the server with a larger "
        "--max-body-bytes",
        {"Connection": "close"},
    )


class _Inflater:
    """Streaming gzip inflation that stops at `limit` output bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.inflate = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        parts = []
        while data:
            try:
                out = self.inflate.decompress(data, self.limit - self.size + 1)
            except zlib.error as err:
                raise RestError(
                    400, f"the body is not valid gzip ({err}); send it "
                    "without Content-Encoding or compress it with gzip",
                ) from None
            self.size += len(out)
            if self.size > self.limit:
                raise too_large(self.limit, "the inflated request body")
            parts.append(out)
            if self.inflate.eof:  # gzip allows several members in a row
                data = self.inflate.unused_data
                if data:
                    self.inflate = zlib.decompressobj(_GZIP_WBITS)
            else:
                data = self.inflate.unconsumed_tail
        return b"".join(parts)

    def finish(self):
        if not self.inflate.eof:
            raise RestError(
                400, "the gzip body is truncated: the stream ends before "
                "its last member does",
            )
