"""The committed extauthz_server/_proto matches what scripts/gen_protos.py makes of protos/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_protos_match_protos_dir() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        "extauthz_server/_proto is stale; run `python scripts/gen_protos.py`\n" + result.stderr
    )
