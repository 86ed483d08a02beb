"""The visualizer in headless Chromium: screenshot, one SVG element per IR node, click shows attributes.

Installs Debian's ``chromium`` where it runs (root + apt-get) or skips with the reason.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sglc.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIP = f"{EXAMPLES / 'tip_suggestion.py'}:tip_suggestion"

# Runs inside the page once it loaded: counts the shown view's nodes, clicks a gen, reports the panel.
PROBE = """<script>
const view = document.querySelector('.view.active');
const nodes = view.querySelectorAll('svg g.node');
const gen = view.querySelector('svg g.node.kind-gen');
gen.firstElementChild.dispatchEvent(new MouseEvent('click', {bubbles: true}));
const out = {title: view.dataset.title, nodes: nodes.length, ids: [...nodes].map(n => +n.dataset.id),
             svgs: document.querySelectorAll('svg.irgraph').length,
             panel: document.getElementById('attrs').innerText, selected: !!view.querySelector('g.node.selected')};
const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script></body>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    try:
        if subprocess.run(install, capture_output=True, timeout=600, check=False).returncode != 0:
            # NOTE: a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, check=True)
            subprocess.run(install, capture_output=True, timeout=600, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"could not install chromium with apt-get: {e}")
    return shutil.which("chromium") or pytest.skip("apt-get installed no chromium binary")


def _run(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def test_visualizer_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    page = tmp_path / "tip.html"
    assert main(["viz", TIP, "-o", str(page)]) == 0
    shot = tmp_path / "tip.png"
    _run(browser, f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE))
    dom = _run(browser, "--dump-dom", probe.as_uri()).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert m, f"the probe did not run; chromium printed: {dom[:300]!r}"
    out = json.loads(html.unescape(m.group(1)))
    assert out["title"] == "after compile-constraints" and out["svgs"] == 7  # trace + one view per pass (6 at -O2)
    assert out["nodes"] == 14 and len(set(out["ids"])) == 14  # one SVG element per IR node
    assert out["selected"]
    assert "%5 gen @s1" in out["panel"] and "stop" in out["panel"] and "batched gen" in out["panel"]
