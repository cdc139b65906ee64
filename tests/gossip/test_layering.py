"""The primitives the layers above sign and encode with load without the transport."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_codec_crypto_and_verdict_import_without_aiohttp() -> None:
    code = ("import sys, gossip.codec, gossip.crypto\n"
            "from gossip import Verdict\n"
            "heavy = sorted(m for m in ('aiohttp', 'gossip.service', 'gossip.peer') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing the primitives loaded {out.stdout.strip()}"


def test_the_transport_is_still_reachable_from_the_package() -> None:
    import gossip

    assert gossip.Gossip.__name__ == "Gossip" and gossip.GossipConfig.__name__ == "GossipConfig"
