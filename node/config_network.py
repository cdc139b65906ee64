"""The ``[network]`` section of ``config.toml``: where the node listens and whom it dials first.

It is the one section handed to the gossip layer (:meth:`NetworkConfig.gossip_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gossip.codec import DEFAULT_MAX_MESSAGE
from gossip.config import SCOPES, GossipConfig
from node.config_checks import ConfigError, check_base_url, check_port, check_positive

DEFAULT_PORT = 26657
DEFAULT_HOST = "127.0.0.1"


@dataclass
class NetworkConfig:
    """Listening address, peers to dial first, and transport limits (handed to the gossip layer)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    advertised_url: str = ""
    bootstrap: list[str] = field(default_factory=list)
    max_message: int = DEFAULT_MAX_MESSAGE
    max_peers: int = 64
    max_outbound: int = 16
    dial_scope: str = "public"

    def validate(self) -> None:
        if not self.host:
            raise ConfigError("network.host must not be empty")
        check_port(self.port, "network.port")
        if self.advertised_url:
            self.advertised_url = check_base_url(self.advertised_url, "network.advertised_url")
        self.bootstrap = [check_base_url(u, "network.bootstrap entry") for u in self.bootstrap]
        if self.max_message < 1024:
            raise ConfigError(f"network.max_message must be at least 1024 bytes, got {self.max_message}")
        check_positive(self.max_peers, "network.max_peers")
        check_positive(self.max_outbound, "network.max_outbound")
        if self.max_outbound >= self.max_peers:
            raise ConfigError(f"network.max_outbound ({self.max_outbound}) must be less than "
                              f"network.max_peers ({self.max_peers}): the rest are inbound slots")
        if self.dial_scope not in SCOPES:
            raise ConfigError(f"network.dial_scope must be one of {', '.join(SCOPES)}, got {self.dial_scope!r}")

    @property
    def url(self) -> str:
        """The base URL peers and clients use to reach this node."""
        return self.advertised_url or f"http://{self.host}:{self.port}"

    def gossip_config(self, chain_id: str) -> GossipConfig:
        """The gossip layer's settings for this node (its other knobs keep their defaults)."""
        return GossipConfig(chain_id=chain_id, listen_url=self.url, bootstrap=list(self.bootstrap),
                            max_message=self.max_message, max_outbound=self.max_outbound,
                            max_inbound=self.max_peers - self.max_outbound,
                            dial_scope=self.dial_scope)  # type: ignore[arg-type]
