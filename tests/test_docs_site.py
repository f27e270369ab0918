"""The documentation site (mkdocs.yml: docs/, the benchmark reports, and the API reference from the
docstrings) builds with ``mkdocs build --strict``: no broken link or anchor, no docstring that
mkdocstrings cannot read, and no network (proxies point nowhere, so a download would fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "http://127.0.0.1:9"

PUBLIC = ["policygrad.Model", "policygrad.PPO", "policygrad.A2C", "policygrad.REINFORCE", "policygrad.NPG",
          "policygrad.TRPO", "policygrad.load", "policygrad.Callback", "policygrad.InputError",
          "policygrad.returns.gae", "policygrad.losses.clipped_surrogate", "policygrad.distributions.Categorical",
          "policygrad.verify.verify"]
"""Objects the API reference must document (each gets an HTML anchor named after its path)."""


@pytest.mark.slow
def test_the_site_builds_strictly_and_offline(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e .[docs]) is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")
    site = tmp_path / "site"
    env = {**os.environ, "HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE, "http_proxy": NOWHERE,
           "https_proxy": NOWHERE, "NO_PROXY": "", "no_proxy": ""}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in PUBLIC if f'id="{name}"' not in reference]
    assert not missing, f"the API reference does not document {missing}"
    assert (site / "benchmarks" / "index.html").is_file()
