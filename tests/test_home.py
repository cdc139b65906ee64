"""node/home.py: creating and loading a home folder, and a clear error for each broken part."""

from __future__ import annotations

import json
import os

import pytest

from consensus.genesis import make_genesis
from gossip.crypto import KeyPair
from node.config_checks import ConfigError
from node.home import HomePaths, init_home, load_home
from node.home import load_key as load_home_key


def _genesis(*keys: KeyPair):
    return make_genesis("home-test", [k.node_id for k in keys], genesis_time_ms=1_700_000_000_000)


@pytest.fixture
def home(tmp_path):
    key = KeyPair.from_seed(b"\x01" * 32)
    init_home(tmp_path / "n0", _genesis(key), port=30100, bootstrap=["http://127.0.0.1:30101"], keypair=key,
              moniker="first")
    return tmp_path / "n0"


def test_init_then_load_round_trip(home):
    loaded = load_home(home)
    paths = HomePaths(home)
    assert loaded.keypair.node_id == KeyPair.from_seed(b"\x01" * 32).node_id
    assert loaded.genesis.chain_id == "home-test"
    assert loaded.config.moniker == "first"
    assert loaded.config.network.port == 30100
    assert loaded.config.network.bootstrap == ["http://127.0.0.1:30101"]
    assert os.stat(paths.node_key).st_mode & 0o777 == 0o600
    for folder in (paths.data, paths.blobs, paths.logs):
        assert folder.is_dir()
    assert paths.chain_db.parent == paths.data


def test_load_recreates_missing_data_folders(home):
    paths = HomePaths(home)
    paths.blobs.rmdir()
    paths.logs.rmdir()
    load_home(home)
    assert paths.blobs.is_dir() and paths.logs.is_dir()


def test_init_refuses_existing_home(home):
    with pytest.raises(ConfigError, match="already"):
        init_home(home, _genesis(KeyPair.generate()))


def test_init_keeps_an_existing_key(tmp_path):
    key = KeyPair.generate()
    key.save(HomePaths(tmp_path / "h").node_key)
    created = init_home(tmp_path / "h", _genesis(key))
    assert created.keypair.node_id == key.node_id
    assert load_home(tmp_path / "h").keypair.node_id == key.node_id


def test_init_refuses_a_different_key_than_the_one_on_disk(tmp_path):
    KeyPair.generate().save(HomePaths(tmp_path / "h").node_key)
    other = KeyPair.generate()
    with pytest.raises(ConfigError, match="different key"):
        init_home(tmp_path / "h", _genesis(other), keypair=other)


def test_missing_home(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*fedchain init"):
        load_home(tmp_path / "nowhere")


def test_missing_config(home):
    HomePaths(home).config.unlink()
    with pytest.raises(ConfigError, match="config.toml not found"):
        load_home(home)


def test_invalid_config(home):
    HomePaths(home).config.write_text("[network]\nport = -1\n")
    with pytest.raises(ConfigError, match="network.port"):
        load_home(home)


def test_missing_genesis(home):
    HomePaths(home).genesis.unlink()
    with pytest.raises(ConfigError, match="genesis.json not found"):
        load_home(home)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    (json.dumps({"chain_id": "x"}), "missing field 'genesis_time_ms'"),
])
def test_corrupt_genesis(home, content, fragment):
    HomePaths(home).genesis.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_home(home)


def test_key_readable_by_others(home):
    os.chmod(HomePaths(home).node_key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_home(home)


def test_missing_key(home):
    HomePaths(home).node_key.unlink()
    with pytest.raises(ConfigError, match="fedchain keys new"):
        load_home(home)


def test_corrupt_key(home):
    path = HomePaths(home).node_key
    path.write_text('{"seed": "zz"}')
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not a valid fedchain key"):
        load_home(home)


# --- the key file is written so that no other user can ever read it ----------------------------


def _readable_copies(folder, seed_hex: str) -> list[str]:
    """Files under ``folder`` (symlinks followed) holding the seed with any group/other permission."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and os.stat(path).st_mode & 0o077 and seed_hex in path.read_text(errors="replace"):
            found.append(path.name)
    return found


def test_save_over_a_world_readable_leftover_tmp_keeps_the_key_private(tmp_path):
    """A crash of an older writer can leave ``node_key.json.tmp`` behind with mode 0644."""
    path = HomePaths(tmp_path).node_key
    leftover = path.with_name(path.name + ".tmp")
    leftover.write_text("stale")
    os.chmod(leftover, 0o644)
    key = KeyPair.from_seed(b"\x07" * 32)
    key.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert KeyPair.load(path).node_id == key.node_id
    assert _readable_copies(tmp_path, (b"\x07" * 32).hex()) == []


def test_save_does_not_follow_a_planted_tmp_symlink(tmp_path):
    """Whoever can write the home folder must not be able to redirect the key to a file it reads."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    stolen = outside / "stolen"
    stolen.write_text("")
    os.chmod(stolen, 0o644)
    path = HomePaths(home).node_key
    path.with_name(path.name + ".tmp").symlink_to(stolen)
    KeyPair.from_seed(b"\x08" * 32).save(path)
    assert stolen.read_text() == ""
    assert not path.is_symlink() and os.stat(path).st_mode & 0o777 == 0o600
    assert _readable_copies(tmp_path, (b"\x08" * 32).hex()) == []


def test_save_refuses_a_symlinked_key_file(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("")
    path = HomePaths(tmp_path / "h").node_key
    path.parent.mkdir()
    path.symlink_to(target)
    with pytest.raises(PermissionError, match="symbolic link"):
        KeyPair.generate().save(path)
    assert target.read_text() == "" and path.is_symlink()
    assert sorted(p.name for p in path.parent.iterdir()) == ["node_key.json"]  # no temp file left behind


def test_save_with_a_permissive_umask_still_writes_0600(tmp_path):
    old = os.umask(0)
    try:
        KeyPair.generate().save(HomePaths(tmp_path).node_key)
    finally:
        os.umask(old)
    assert os.stat(HomePaths(tmp_path).node_key).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["folder", "fifo"])
def test_load_refuses_a_key_that_is_not_a_regular_file(tmp_path, make):
    path = HomePaths(tmp_path).node_key
    make(path, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_home_key(path)
