"""HTTP requests written byte for byte, for what urllib and http.client will not send:
a hostile Host header, undecodable bytes in the request target, chunked bodies."""

from __future__ import annotations

from dataclasses import dataclass

from .outlook import raw_http


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    port: int,
    method: str,
    target: bytes | str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Answer:
    """One request on a fresh connection; ``target`` goes on the request line exactly as given.

    A body gets a Content-Length unless ``headers`` name a Transfer-Encoding.
    """
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    fields = {"Host": host, "Connection": "close", **(headers or {})}
    if body is not None and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = b"%s %s HTTP/1.1\r\n" % (method.encode(), raw_target)
    head += b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields.items())
    status, answer_headers, answer_body = raw_http(port, head + b"\r\n" + (body or b""))
    return Answer(status, answer_headers, answer_body)
