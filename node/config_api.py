"""The ``[api]`` section of ``config.toml``: the limits of the HTTP API.

Read by the API's rate limiter (:mod:`node.api_limits`) and connection guard
(:mod:`node.connections`).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config_checks import ConfigError, check_positive


@dataclass
class ApiConfig:
    """Limits of the HTTP API, so that no client can make the node do unbounded work.

    Rates are token buckets per client address (an IPv6 client is its /64): one for requests,
    one for the bytes of the answers (so bulk answers cost a client what they cost the node),
    and a stricter one for transactions. The defaults leave room for what honest parties do (a
    peer polls ``/status`` once a second and fetches pages and updates now and then; a syncing
    node pulls pages of blocks far faster than a chain of full blocks grows; a testnet on one
    machine puts every node, the CLI and the tests behind 127.0.0.1) and hold a flood from one
    address to a few dozen requests a second; see ``docs/node.md``.
    """

    max_blocks_per_page: int = 100
    max_body: int = 1024 * 1024
    max_subscribers: int = 64
    max_response_bytes: int = 4 * 1024 * 1024  # one list answer (/blocks, /mempool, /fl/updates)
    requests_per_s: int = 50                    # per client: bucket refill
    request_burst: int = 200                    # per client: bucket size
    answer_bytes_per_s: int = 8 * 1024 * 1024   # per client: bytes of answers (and bucket size)
    txs_per_s: int = 20                         # POST /txs per client, on top of the above
    tx_burst: int = 100
    max_inflight_per_client: int = 32           # requests of one client being served at once
    max_inflight: int = 64                      # requests of all clients being served at once
    request_timeout_ms: int = 30_000            # to receive a request body, and to send an answer
    head_timeout_ms: int = 10_000               # to send a request head, from connecting or the last answer
    max_connections_per_client: int = 256       # TCP connections one address holds (gossip sessions too)
    max_connections: int = 512                  # TCP connections of all clients (see node/connections.py)

    def validate(self) -> None:
        if not 1 <= self.max_blocks_per_page <= 100:
            raise ConfigError(f"api.max_blocks_per_page must be between 1 and 100, got {self.max_blocks_per_page}")
        if self.max_body < 1024:
            raise ConfigError(f"api.max_body must be at least 1024 bytes, got {self.max_body}")
        if self.max_response_bytes < 64 * 1024:
            raise ConfigError(f"api.max_response_bytes must be at least 65536 bytes, got {self.max_response_bytes}")
        for name in ("max_subscribers", "requests_per_s", "request_burst", "answer_bytes_per_s", "txs_per_s",
                     "tx_burst", "max_inflight_per_client", "max_inflight", "request_timeout_ms",
                     "head_timeout_ms", "max_connections_per_client", "max_connections"):
            check_positive(getattr(self, name), f"api.{name}")
