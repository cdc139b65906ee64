"""node/config.py: round trips, defaults, and one clear ConfigError per kind of bad config."""

from __future__ import annotations

import pytest

from node.config import NodeConfig, load_config, parse_config, save_config
from node.config_checks import ConfigError


def test_defaults_round_trip(tmp_path):
    path = tmp_path / "config.toml"
    save_config(NodeConfig(), path)
    loaded = load_config(path)
    assert loaded == NodeConfig()
    assert loaded.network.port == 26657 and loaded.network.host == "127.0.0.1"
    assert loaded.network.max_message == 8 * 1024 * 1024
    assert loaded.api.max_blocks_per_page == 100
    assert loaded.fault.double_sign is False and not loaded.fault.any_enabled
    assert loaded.network.url == "http://127.0.0.1:26657"


def test_custom_values_round_trip(tmp_path):
    cfg = NodeConfig(moniker="edge-7", log_level="debug", log_format="json")
    cfg.network.port = 30001
    cfg.network.host = "0.0.0.0"
    cfg.network.advertised_url = "http://edge-7.local:30001"
    cfg.network.bootstrap = ["http://127.0.0.1:30002", "http://127.0.0.1:30003"]
    cfg.api.max_blocks_per_page = 20
    cfg.fault.double_sign = True
    path = tmp_path / "config.toml"
    save_config(cfg, path)
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.network.url == "http://edge-7.local:30001"
    assert loaded.fault.any_enabled


@pytest.mark.parametrize("key", ["double_sign", "withhold_votes", "lie_height", "flood_mempool", "wrong_model",
                                 "lying_partial"])
def test_each_fault_switch_parses_and_counts_as_enabled(key):
    cfg = parse_config(f"[fault]\n{key} = true\n")
    assert getattr(cfg.fault, key) is True and cfg.fault.any_enabled
    assert not parse_config(f"[fault]\n{key} = false\n").fault.any_enabled


def test_partial_file_keeps_defaults():
    cfg = parse_config('moniker = "a"\n[network]\nport = 4000\n')
    assert cfg.moniker == "a" and cfg.network.port == 4000
    assert cfg.network.max_peers == NodeConfig().network.max_peers


def test_urls_are_normalised():
    cfg = parse_config('[network]\nbootstrap = ["HTTP://127.0.0.1:9000/"]\nadvertised_url = "http://Host:1/"\n')
    assert cfg.network.bootstrap == ["http://127.0.0.1:9000"]
    assert cfg.network.advertised_url == "http://host:1"


def test_gossip_config_carries_network_settings():
    cfg = parse_config('[network]\nport = 4000\nbootstrap = ["http://127.0.0.1:4001"]\nmax_peers = 5\nmax_outbound = 2\n')
    g = cfg.network.gossip_config("chain-x")
    assert (g.chain_id, g.listen_url, g.bootstrap, g.max_peers) == (
        "chain-x", "http://127.0.0.1:4000", ["http://127.0.0.1:4001"], 5)


@pytest.mark.parametrize("text, fragment", [
    ("port = 1", "unknown key 'port'"),
    ("[network]\nprot = 1", "unknown key [network] 'prot'"),
    ("[bogus]\nx = 1", "unknown key 'bogus'"),
    ("network = 3", "network must be a table"),
    ('[network]\nport = "26657"', "network.port must be an integer"),
    ("[network]\nport = 0", "network.port must be between 1 and 65535"),
    ("[network]\nport = 70000", "network.port must be between 1 and 65535"),
    ("[network]\nport = true", "network.port must be an integer"),
    ("[network]\nport = 1.5", "network.port must be an integer"),
    ('[network]\nbootstrap = "http://a:1"', "network.bootstrap must be a list of strings"),
    ('[network]\nbootstrap = ["ftp://a:1"]', "must use http or https"),
    ('[network]\nbootstrap = ["http://a:1/path"]', "without path"),
    ('[network]\nadvertised_url = "nonsense"', "network.advertised_url"),
    ("[network]\nmax_message = 10", "max_message must be at least 1024"),
    ("[network]\nmax_peers = 0", "max_peers must be positive"),
    ("[network]\nmax_peers = 16", "max_outbound (16) must be less than network.max_peers (16)"),
    ('[network]\ndial_scope = "everywhere"', "dial_scope must be one of public, private, local"),
    ('[network]\nhost = ""', "network.host must not be empty"),
    ("[api]\nmax_blocks_per_page = 101", "max_blocks_per_page must be between 1 and 100"),
    ("[api]\nmax_body = 1", "max_body must be at least 1024"),
    ('[fault]\ndouble_sign = "yes"', "fault.double_sign must be true or false"),
    ("[fault]\nwithhold_votes = 1", "fault.withhold_votes must be true or false"),
    ('[fault]\nlie_height = "true"', "fault.lie_height must be true or false"),
    ("[fault]\nflood_mempool = 0", "fault.flood_mempool must be true or false"),
    ("[fault]\nwithold_votes = true", "unknown key [fault] 'withold_votes'"),
    ('[sync]\ntrusted_checkpoint = "12"', "sync.trusted_checkpoint must be HEIGHT:BLOCKHASH"),
    ('[sync]\ntrusted_checkpoint = "0:' + "ab" * 32 + '"', "height must be at least 1"),
    ('[sync]\ntrusted_checkpoint = "-3:' + "ab" * 32 + '"', "sync.trusted_checkpoint must be HEIGHT:BLOCKHASH"),
    ('[sync]\ntrusted_checkpoint = "7:' + "ab" * 31 + '"', "64 hex"),
    ('[sync]\ntrusted_checkpoint = "7:' + "zz" * 32 + '"', "64 hex"),
    ('[sync]\ntrusted_checkpoint = 7', "sync.trusted_checkpoint must be a string"),
    ('log_level = "loud"', "log_level must be one of"),
    ('log_format = "xml"', "log_format must be one of"),
    ('moniker = ""', "moniker must be 1 to 64"),
    ("moniker = 5", "moniker must be a string"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x/config.toml")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("x/config.toml")


def test_missing_config_file_says_how_to_create_it(tmp_path):
    with pytest.raises(ConfigError, match="fedchain init"):
        load_config(tmp_path / "config.toml")


def test_unreadable_config_is_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path)


def test_save_refuses_invalid_config(tmp_path):
    cfg = NodeConfig()
    cfg.network.port = 0
    with pytest.raises(ConfigError):
        save_config(cfg, tmp_path / "config.toml")
    assert not (tmp_path / "config.toml").exists()


def test_trusted_checkpoint_is_parsed_and_normalised(tmp_path):
    block_hash = "AB" * 32
    cfg = parse_config(f'[sync]\ntrusted_checkpoint = " 120:{block_hash}"\n')
    assert cfg.sync.trusted_checkpoint == "120:" + "ab" * 32
    assert cfg.sync.checkpoint == (120, bytes.fromhex("ab" * 32))
    save_config(cfg, tmp_path / "config.toml")
    assert "[sync]" in (tmp_path / "config.toml").read_text()
    assert load_config(tmp_path / "config.toml").sync.checkpoint == (120, bytes.fromhex("ab" * 32))
    assert NodeConfig().sync.checkpoint is None
