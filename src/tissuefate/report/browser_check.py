"""Check an HTML page in Debian's headless Chromium: screenshot, console errors, images and table.

What works with Chromium 156 (Debian 12), found by trying it:

* ``--dump-dom`` and ``--screenshot`` work in the same invocation; ``--dump-dom`` prints the DOM after the
  ``load`` event (so after every ``<img>`` is decoded and the page's load handler has run).
* ``--enable-logging=stderr --v=0`` prints every console message and uncaught exception as
  ``[pid:tid:date:INFO:CONSOLE:<line>] "<text>", source: <url> (<line>)``. This build logs every console
  level as ``INFO``, so the level cannot be read from the line; a failed image load is not logged at all.
  Hence the page cooperates: its inline script (:data:`STATUS_ID`) collects ``error`` events (uncaught
  exceptions and failed resource loads, in the capture phase) and ``console.error`` calls, checks every
  ``<img>`` (``naturalWidth > 0``) and the metrics table after load, and writes the result as JSON into the
  ``data-status`` attribute of the element ``#tf-check``, which ``--dump-dom`` returns.
* Without ``--disable-background-networking --disable-component-update --disable-sync`` Chromium keeps
  trying to reach Google services, which on a closed network floods stderr with refused connections.
* ``--window-size=W,H`` sets the viewport, and the screenshot is exactly W x H pixels. A full-page
  screenshot therefore takes two runs: the first reads the page height from the status, the second shoots.

Every subprocess is started in its own session and killed (the whole process group it started) after
:data:`TIMEOUT_S`.
"""
from __future__ import annotations

import html as _html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

TIMEOUT_S = 60
STATUS_ID = "tf-check"
MAX_HEIGHT = 16000
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--hide-scrollbars")

_CONSOLE_RE = re.compile(r':CONSOLE(?::\d+|\(\d+\))\] "(?P<msg>.*)", source: (?P<src>.*?) \((?P<line>\d+)\)\s*$')
_STATUS_RE = re.compile(r'<[^>]*\bid="' + STATUS_ID + r'"[^>]*>')
_ATTR_RE = re.compile(r'\bdata-status="([^"]*)"')


def find_chromium() -> str | None:
    """Path of a Chromium executable (``/usr/bin/chromium``, ``chromium`` or ``chromium-browser``), or None."""
    for c in CANDIDATES:
        p = c if os.path.isabs(c) else shutil.which(c)
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def parse_console(stderr: str) -> list[dict]:
    """Console messages in Chromium's ``--enable-logging=stderr`` output: [{message, source, line}]."""
    out = []
    for line in stderr.splitlines():
        m = _CONSOLE_RE.search(line)
        if m:
            out.append({"message": m["msg"], "source": m["src"], "line": int(m["line"])})
    return out


def parse_status(dom: str) -> dict | None:
    """The JSON status the page's script wrote into ``#tf-check[data-status]``, or None if there is none."""
    tag = _STATUS_RE.search(dom)
    if not tag:
        return None
    attr = _ATTR_RE.search(tag.group(0))
    if not attr:
        return None
    try:
        return json.loads(_html.unescape(attr.group(1)))
    except ValueError:
        return None


def _run(cmd: list[str], timeout: float = TIMEOUT_S) -> tuple[int, str, str]:
    """Run ``cmd`` in its own process group; kill that group on time-out. Returns (rc, stdout, stderr)."""
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS="disabled:")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return -9, out, err + f"\n[browser_check] timed out after {timeout:g} s: {cmd[0]}\n"
    return proc.returncode, out, err


def _chromium_cmd(exe: str, url: str, profile: str, width: int, height: int, extra: list[str]) -> list[str]:
    return [exe, *BASE_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            f"--window-size={width},{height}", "--virtual-time-budget=5000", *extra, url]


def run_chromium(html: Path, width: int, height: int, screenshot: Path | None = None,
                 exe: str | None = None) -> dict:
    """One headless Chromium run on ``html`` with a fresh profile: DOM after load, console, optional screenshot."""
    exe = exe or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (install it with `make browser`)")
    extra = ["--dump-dom"]
    if screenshot is not None:
        extra.append(f"--screenshot={Path(screenshot).resolve()}")
    with tempfile.TemporaryDirectory(prefix="tf-chromium-") as profile:
        rc, dom, err = _run(_chromium_cmd(exe, Path(html).resolve().as_uri(), profile, width, height, extra))
    return {"returncode": rc, "dom": dom, "stderr": err, "console": parse_console(err),
            "status": parse_status(dom)}


def _errors(run: dict) -> list[str]:
    """Console errors of one run: uncaught exceptions logged by Chromium plus the errors the page collected."""
    status = run["status"]
    page_errs = [str(e) for e in (status or {}).get("errors", [])]
    errs = [f"{c['message']} ({c['source']}:{c['line']})" for c in run["console"]
            if c["message"].startswith("Uncaught") and not any(c["message"] in e for e in page_errs)]
    if status is None:
        errs.append(f"page wrote no #{STATUS_ID} status (its script did not run, or Chromium failed: "
                    f"exit code {run['returncode']})")
    errs += page_errs
    if run["returncode"] != 0:
        errs.append(f"chromium exit code {run['returncode']}: {run['stderr'].strip().splitlines()[-1:]}")
    seen = []
    for e in errs:
        if e not in seen:
            seen.append(e)
    return seen


def check_page(html: Path, screenshot: Path, width: int = 1400, height: int | None = None) -> dict:
    """Load ``html`` in headless Chromium, write a screenshot, collect console errors and the page's status.

    ``height=None`` shoots the full page (a first run measures its height, at most :data:`MAX_HEIGHT`).
    Returns ``{"console_errors": [...], "images_ok": bool, "table_ok": bool, "screenshot": path,
    "images": n, "console_messages": [...], "height": h}``. Raises FileNotFoundError without Chromium.
    """
    screenshot = Path(screenshot)
    first = run_chromium(html, width, height or 1000, screenshot if height else None)
    run = first
    if height is None:
        page_h = int((first["status"] or {}).get("height") or 1000)
        height = max(200, min(MAX_HEIGHT, page_h))
        run = run_chromium(html, width, height, screenshot)
    status = run["status"] or {}
    return {"console_errors": _errors(run),
            "images_ok": bool(status.get("images_ok", False)),
            "table_ok": bool(status.get("table_ok", False)),
            "screenshot": str(screenshot) if screenshot.is_file() else None,
            "images": status.get("images"),
            "console_messages": [c["message"] for c in run["console"]],
            "height": height}
