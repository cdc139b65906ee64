"""A small synchronous HTTP client for a node's API, for the command line.

The CLI is a short-lived process that makes a handful of requests, so the standard library's
``urllib`` is enough and keeps the command fast to start. Every failure becomes a
:class:`NodeError` with one readable line (the node's own ``{"error": {...}}`` message when it
sent one), which the CLI prints before exiting non-zero.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_NODE = "http://127.0.0.1:26657"
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE = 64 * 1024 * 1024


class NodeError(Exception):
    """A request to a node failed; ``status`` is the HTTP status, or None if the node was unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_message(body: bytes, fallback: str) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:200] or fallback


class NodeClient:
    """Talks to one node's HTTP API at ``base_url``."""

    def __init__(self, base_url: str = DEFAULT_NODE, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: bytes | None = None, content_type: str | None = None) -> bytes:
        """Send one request and return the response body; raise :class:`NodeError` on any failure."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        req = urllib.request.Request(url, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.read(64 * 1024), exc.reason)
            raise NodeError(f"{self.base_url} answered {exc.code}: {message}", exc.code) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NodeError(f"node at {self.base_url} is unreachable: {reason}") from None
        except ValueError as exc:
            raise NodeError(f"bad node URL {self.base_url!r}: {exc}") from None
        if len(data) > MAX_RESPONSE:
            raise NodeError(f"response from {url} is larger than {MAX_RESPONSE} bytes")
        return data

    def get_json(self, path: str, **params: Any) -> Any:
        return self._json(self.request("GET", path, params=params), path)

    def post_bytes(self, path: str, body: bytes, content_type: str) -> Any:
        return self._json(self.request("POST", path, body=body, content_type=content_type), path)

    def _json(self, data: bytes, path: str) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            raise NodeError(f"{self.base_url}{path} did not return JSON") from None
