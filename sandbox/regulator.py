"""What a regulator does with a receipt and with the log, using only ``ledger-verify``.

The demo calls the standalone verifier as a separate process, as a regulator would on its
own machine: it trusts nothing but the log's public key.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _verifier() -> list[str]:
    exe = shutil.which("ledger-verify") or str(Path(sys.executable).with_name("ledger-verify"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "ledger.verify_cli"]


def run_verifier(args: list[str], say: Callable[[str], None]) -> bool:
    r = subprocess.run([*_verifier(), *args], capture_output=True, text=True, timeout=600,
                       check=False)
    for line in (r.stdout + r.stderr).strip().splitlines()[:6]:
        say(f"    {line[:160]}")
    return r.returncode == 0


def verify_receipt(receipt: dict[str, Any], vkey: str, say: Callable[[str], None]) -> bool:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "receipt.json"
        path.write_text(json.dumps(receipt))
        return run_verifier(["receipt", str(path), "--log-key", vkey.strip()], say)


def audit(url: str, token: str, vkey: str, state: Path, say: Callable[[str], None]) -> bool:
    return run_verifier(["audit", "--url", url, "--token", token, "--log-key", vkey.strip(),
                         "--state", str(state)], say)
