"""Maps drawn to files: the HTML page (opened in headless Chromium) and the PNG."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentdb import InvalidArgumentError
from latentdb.analysis import SpaceMap, coloring, write_html, write_map, write_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "</script><script>window.injected = 1</script> & <b>bold</b>"


def a_map(n: int, seed: int = 0) -> SpaceMap:
    rng = np.random.default_rng(seed)
    groups = ["alpha", "beta", "gamma", "delta"]
    return SpaceMap(
        ids=[f"id-{i}" for i in range(n)],
        coordinates=(
            rng.standard_normal((n, 2)) + np.repeat(np.eye(2) * 6, n // 2 + 1, 0)[:n]
        ).astype(np.float32),
        documents=[
            HOSTILE if i == 3 else (None if i == 4 else f"doc {i} " + "x" * 300) for i in range(n)
        ],
        metadatas=[None if i == 5 else {"group": groups[i % 4], "size": i} for i in range(n)],
        method="pca",
        total=n * 2,
        collection="test",
    )


def embedded_data(page: str) -> dict[str, Any]:
    start = page.index('<script type="application/json" id="data">') + len(
        '<script type="application/json" id="data">'
    )
    return json.loads(page[start : page.index("</script>", start)])  # type: ignore[no-any-return]


def test_html_is_self_contained_and_escapes_documents(tmp_path: Path) -> None:
    path = write_html(a_map(300), tmp_path / "m.html", color_by="group")
    page = path.read_text()
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert page.count("</script>") == 3  # the error hook, the data, the code: no injected one
    data = embedded_data(page)
    assert data["docs"][3] == HOSTILE
    assert data["ids"][:2] == ["id-0", "id-1"] and len(data["x"]) == 300
    # Most frequent first: "beta" lost record 5, which has no metadata.
    assert data["color"]["categories"] == ["alpha", "gamma", "delta", "beta"]
    assert data["color"]["codes"][5] is None or data["color"]["codes"][5] == -1
    assert len(data["docs"][0]) == 240  # document start only
    assert "test: 300 of 600 records, PCA, coloured by group" in page


def test_coloring_by_numbers_and_by_many_categories() -> None:
    space_map = a_map(100)
    numbers = coloring(space_map, "size")
    assert numbers.kind == "number" and numbers.low == 0 and numbers.high == 99
    assert np.isnan(numbers.codes[5]) and numbers.codes[99] == 1.0
    many = SpaceMap(
        ids=[str(i) for i in range(40)],
        coordinates=np.zeros((40, 2), np.float32),
        documents=[None] * 40,
        metadatas=[{"word": f"w{i % 20}"} for i in range(40)],
        method="pca",
        total=40,
        collection="c",
    )
    words = coloring(many, "word")
    assert len(words.categories) == 13 and words.categories[-1] == "other"
    assert max(words.codes) == 12
    with pytest.raises(InvalidArgumentError, match="no mapped record has metadata field 'colour'"):
        coloring(space_map, "colour")


def test_png_is_a_small_image(tmp_path: Path) -> None:
    path = write_map(a_map(5000), tmp_path / "m.png", color_by="group")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 300_000
    write_png(a_map(500), tmp_path / "n.png", color_by="size")
    write_png(a_map(500), tmp_path / "plain.png")
    assert (tmp_path / "n.png").stat().st_size > 10_000


class DevTools:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, profile: Path) -> None:
        import websocket

        assert CHROMIUM is not None
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1200,800",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes share the group: close ends all
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port within 30 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]  # type: ignore[no-any-return]
            self.events.append(message)

    def wait_for(self, event: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event} within {seconds} s"
            self.events.append(json.loads(self.socket.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        """End the browser and every helper process it started (renderer, zygote,
        crashpad): they outlive the browser process for a moment and go on writing to
        the profile, which would then fail to be removed ("Directory not empty")."""
        self.socket.close()
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


@pytest.fixture
def browser() -> Iterator[DevTools]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip(
            "Chromium is not installed (apt-get install chromium; .ci/run does; README: "
            "Running the tests)"
        )
    profile = Path(tempfile.mkdtemp(prefix="latentdb-chromium-"))
    try:
        tools = DevTools(profile)
        try:
            yield tools
        finally:
            tools.close()
    finally:
        _remove(profile)


def _remove(folder: Path) -> None:
    """rmtree, tried again for a few seconds while an exiting process still writes in it."""
    deadline = time.monotonic() + 10
    while True:
        try:
            shutil.rmtree(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_map_of_5000_points_renders_in_headless_chromium(browser: DevTools, tmp_path: Path) -> None:
    space_map = a_map(5000)
    path = write_html(space_map, tmp_path / "map.html", color_by="group")
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=path.as_uri())
    browser.wait_for("Page.loadEventFired")
    assert browser.evaluate("document.body.getAttribute('data-rendered')") == "5000"
    assert browser.evaluate("window.latentdbErrors") == []
    assert browser.evaluate("window.injected === undefined")
    painted = browser.evaluate(
        "(() => { const c = document.getElementById('map');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()"
    )
    assert painted > 5000
    legend = browser.evaluate("document.getElementById('legend').textContent")
    assert all(group in legend for group in ("alpha", "beta", "gamma", "delta"))
    # Hover point 3 (its document is the hostile one): the box shows it as text.
    x, y = browser.evaluate("window.latentdbMap.screenOf(3)")
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    shown = browser.evaluate("document.getElementById('tip').style.display")
    assert shown == "block"
    hovered = browser.evaluate("document.querySelector('#tip b').textContent")
    position = space_map.ids.index(hovered)
    text = browser.evaluate("document.getElementById('tip').textContent")
    assert (space_map.documents[position] or "")[:40] in text
    if space_map.metadatas[position]:
        assert f'group: "{space_map.metadatas[position]["group"]}"' in text
    errors = [
        e
        for e in browser.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert errors == []
    requests = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requests and all(url.startswith("file:") for url in requests), requests
