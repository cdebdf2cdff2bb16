"""Outbound HTTP through the standard ``wasi:http/outgoing-handler``.

    from corral import http

    response = http.get("https://api.example.com/price/ACME")
    if response.status == 200:
        price = response.json()["usd"]
    http.request("POST", "https://hooks.example.com/reports", body=b"{}",
                 headers={"content-type": "application/json"}, timeout_ms=2_000)

Every request is denied unless the agent's policy grants HTTP to its scheme, host and
port: a refusal raises :class:`~corral.errors.HttpError` ``http_request_denied`` (or
``destination_ip_prohibited`` when the name resolves to a private address). Redirects
are not followed.
"""

import json as _json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as types

from .errors import HttpError

_METHODS = {
    "GET": types.Method_Get(),
    "HEAD": types.Method_Head(),
    "POST": types.Method_Post(),
    "PUT": types.Method_Put(),
    "PATCH": types.Method_Patch(),
    "DELETE": types.Method_Delete(),
    "OPTIONS": types.Method_Options(),
}


@dataclass
class Response:
    """A response, read whole."""

    status: int
    headers: list = field(default_factory=list)  # [(name, bytes)], names in lowercase
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case), if present."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v.decode("utf-8", "replace")
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError("invalid_response", f"the body is not JSON: {e}") from None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _code_error(code: Any) -> HttpError:
    name = _snake(type(code).__name__.removeprefix("ErrorCode_"))
    detail = getattr(code, "value", None)
    return HttpError(name, f"{name.replace('_', ' ')}" + (f": {detail}" if detail not in (None, "") else ""))


def _stream_error(e: Err) -> HttpError:
    if isinstance(e.value, streams.StreamError_Closed):
        return HttpError("connection_terminated", "the stream closed")
    code = types.http_error_code(e.value.value)
    if code is not None:
        return _code_error(code)
    return HttpError("body_stream_failed", e.value.value.to_debug_string())


def get(url: str, headers: Optional[Mapping[str, str]] = None, timeout_ms: Optional[int] = None) -> Response:
    """``GET url``."""
    return request("GET", url, headers=headers, timeout_ms=timeout_ms)


def post(url: str, body: Union[bytes, str] = b"", headers: Optional[Mapping[str, str]] = None,
         timeout_ms: Optional[int] = None) -> Response:
    """``POST url`` with ``body``."""
    return request("POST", url, body=body, headers=headers, timeout_ms=timeout_ms)


def request(method: str, url: str, body: Union[bytes, str] = b"",
            headers: Optional[Mapping[str, str]] = None, timeout_ms: Optional[int] = None) -> Response:
    """Sends one request and reads the whole response."""
    wasi_method = _METHODS.get(method.upper())
    if wasi_method is None:
        raise HttpError("invalid_method", f"unsupported method {method!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError("invalid_url", f"{url}: expected http:// or https:// and a host")
    data = body.encode() if isinstance(body, str) else bytes(body)
    entries = [(k.lower(), v.encode()) for k, v in (headers or {}).items()]
    if data:
        entries.append(("content-length", str(len(data)).encode()))
    try:
        fields = types.Fields.from_list(entries)
    except Err as e:
        raise HttpError("invalid_header", type(e.value).__name__) from None

    outgoing = types.OutgoingRequest(fields)
    try:
        outgoing.set_method(wasi_method)
        outgoing.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
        outgoing.set_authority(parts.netloc)
        outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    except Err:
        raise HttpError("invalid_url", f"{url}: not a valid request target") from None
    options = None
    if timeout_ms is not None:
        options = types.RequestOptions()
        nanos = timeout_ms * 1_000_000
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout,
                       options.set_between_bytes_timeout):
            try:
                setter(nanos)
            except Err:
                pass  # the host does not support this timeout
    request_body = outgoing.body()
    try:
        pending = outgoing_handler.handle(outgoing, options)
    except Err as e:
        raise _code_error(e.value) from None
    _write_body(request_body, data)

    with pending:
        with pending.subscribe() as ready:
            ready.block()
        answer = pending.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError("internal", "the response was not ready")
    if isinstance(answer.value, Err):
        raise _code_error(answer.value.value)
    with answer.value.value as response:
        status = response.status()
        with response.headers() as response_headers:
            header_list = response_headers.entries()
        with response.consume() as incoming:
            content = _read_body(incoming)
    return Response(status=status, headers=header_list, body=content)


def _write_body(outgoing_body: "types.OutgoingBody", data: bytes) -> None:
    if data:
        with outgoing_body.write() as stream:
            for start in range(0, len(data), 4096):  # at most 4096 bytes per call
                try:
                    stream.blocking_write_and_flush(data[start:start + 4096])
                except Err as e:
                    raise _stream_error(e) from None
    try:
        types.OutgoingBody.finish(outgoing_body, None)
    except Err as e:
        raise _code_error(e.value) from None


def _read_body(incoming: "types.IncomingBody") -> bytes:
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise _stream_error(e) from None
    return b"".join(chunks)
