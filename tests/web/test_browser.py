"""The page in a real headless Chromium (DevTools protocol over websocket): a typed line is answered with audio
the page plays (its AudioWorklet's played-sample counter grows) and words in the transcript. Skipped where no
chromium is installed (CI installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request

import pytest
import trio

pytest.importorskip("starlette")
websockets = pytest.importorskip("websockets")

from microturn.assembly import PipelineSpec
from microturn.web import WebServer, open_web

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")


def _browser(tmp_path):
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # Chromium announces its DevTools address on stderr when it is ready: a blocking read, no polling.
    for line in proc.stderr:
        if line.startswith("DevTools listening on ws://"):
            port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            break
    else:
        raise RuntimeError(f"chromium exited ({proc.wait()}) before announcing its DevTools port")
    # keep draining its log so a chatty browser never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port


class _Cdp:
    """A minimal DevTools client: one page target, Runtime.evaluate."""

    def __init__(self, port: int) -> None:
        from websockets.sync.client import connect

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=1 << 24).__enter__()
        self.ids = 0

    def call(self, method: str, **params):
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.ids:
                return reply.get("result", {})

    def eval(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                         awaitPromise=True)["result"].get("value")

    def wait_for(self, condition: str, timeout_s: float) -> bool:
        """Whether ``condition`` (a page expression) became true within ``timeout_s``: the page re-checks it on
        its own timer (animation frames stall in a hidden page), so the test waits on one reply instead of polling."""
        return self.eval(f"""new Promise(resolve => {{
            const give_up = performance.now() + {timeout_s * 1000};
            const check = () => {{
                if ({condition}) resolve(true);
                else if (performance.now() > give_up) resolve(false);
                else setTimeout(check, 20);
            }};
            check();
        }})""")


async def test_typed_line_is_answered_played_and_shown(tmp_path) -> None:
    async with open_web(WebServer(PipelineSpec(model="scripted", render_audio=True)), port=0) as url:
        proc, port = await trio.to_thread.run_sync(_browser, tmp_path)
        try:
            cdp = await trio.to_thread.run_sync(_Cdp, port)
            await trio.to_thread.run_sync(lambda: cdp.call("Page.navigate", url=url + "/"))
            assert await trio.to_thread.run_sync(cdp.wait_for, "window.__microturn && window.__microturn.open", 30)
            await trio.to_thread.run_sync(cdp.eval, "document.getElementById('text').value = 'hello there';"
                                          "document.getElementById('form').requestSubmit(); true")
            assert await trio.to_thread.run_sync(cdp.wait_for, "window.__microturn.played > 0", 60)
            hooks = await trio.to_thread.run_sync(cdp.eval, "window.__microturn")
            assert ["user", "hello there"] in hooks["transcript"]
            assert any(role == "assistant" for role, _ in hooks["transcript"])
            shot = await trio.to_thread.run_sync(lambda: cdp.call("Page.captureScreenshot", format="png"))
            (tmp_path / "page.png").write_bytes(__import__("base64").b64decode(shot["data"]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
