"""`mirai serve` driven as people use it: a real uvicorn server on a loopback port, viewers on real WebSockets, and
the page in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium; nothing downloads a
browser). tests/test_serve_browser.py and scripts/serve_check.py use it.

Every load it makes goes to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
import websockets

from mirai.sampling.pipeline import Pipeline
from mirai.serve.app import Server, ServeSettings

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(models: dict[str, Pipeline], settings: ServeSettings | None = None):
    """A served app on 127.0.0.1 in a background thread: yields (base URL, the Server)."""
    with tempfile.TemporaryDirectory(prefix="mirai-serve-test-") as folder:
        server = Server(models, settings or ServeSettings(), Path(folder))
        port = free_port()
        config = uvicorn.Config(server.app(), host="127.0.0.1", port=port, log_level="warning",
                                ws="websockets-sansio", lifespan="on", timeout_graceful_shutdown=5)
        web = uvicorn.Server(config)
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not web.started and time.time() < deadline:
            time.sleep(0.05)
        if not web.started:
            raise RuntimeError("the test server did not start")
        try:
            yield f"http://127.0.0.1:{port}", server
        finally:
            web.should_exit = True
            thread.join(timeout=30)


# ---------------------------------------------------------------------------------------------------- viewers


async def watch(url: str, start: dict, seconds: float, restart: bool = True) -> dict:
    """One viewer on the socket for `seconds`: starts a stream (again when one ends, if `restart`), counts what it
    gets. Returns frames, chunks, errors (messages of type error/busy), first-chunk latency (socket), and the
    sustained frames per second after the first chunk."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    frames = chunks = 0
    errors: list[str] = []
    first = None
    async with websockets.connect(ws_url, max_size=None) as ws:
        json.loads(await ws.recv())  # hello
        t0 = time.perf_counter()
        end = t0 + seconds
        await ws.send(json.dumps({"op": "start", **start}))
        after_first = 0
        while time.perf_counter() < end:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.01, end - time.perf_counter())))
            except asyncio.TimeoutError:
                break
            kind = message["type"]
            if kind == "chunk":
                got = len(message["lanes"][0])
                frames, chunks = frames + got, chunks + 1
                if first is None:
                    first, first_at = time.perf_counter() - t0, time.perf_counter()
                else:
                    after_first += got
            elif kind in ("error", "busy"):
                errors.append(message["message"])
            elif kind == "done":
                if not restart:
                    break
                await ws.send(json.dumps({"op": "start", **start}))
        spent = time.perf_counter() - first_at if first is not None else 0.0
    return {"frames": frames, "chunks": chunks, "errors": errors, "first_chunk_s": first,
            "fps": after_first / spent if spent > 0 else 0.0}


async def crowd(url: str, viewers: int, start: dict, seconds: float) -> list[dict]:
    return await asyncio.gather(*[watch(url, {**start, "seed": i}, seconds) for i in range(viewers)])


def rss_mb() -> float:
    """This process's resident memory (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_test(url: str, viewers: int, seconds: float, start: dict, every: float = 2.0) -> dict:
    """`viewers` viewers streaming at once for `seconds` (each restarts when its stream ends), with this process's
    memory sampled every `every` seconds."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample():
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_mb()))
            stop.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results = asyncio.run(crowd(url, viewers, start, seconds))
    stop.set()
    sampler.join()
    return {"viewers": viewers, "seconds": seconds, "errors": sum(len(r["errors"]) for r in results),
            "error_messages": sorted({e for r in results for e in r["errors"]})[:5],
            "frames_per_viewer": [r["frames"] for r in results], "rss_mb": samples}


# ---------------------------------------------------------------------------------------------------- the page


def browser():
    """Headless Chromium through chromedriver, both Debian's (None when either is missing)."""
    if not (CHROMIUM and CHROMEDRIVER):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,900", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def upload_on_page(url: str, file: Path, timeout: float = 30.0) -> str:
    """Choose `file` in the page's upload field; what the page then says (an error, or the upload's size)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(url)
        driver.find_element(By.ID, "file").send_keys(str(file))
        WebDriverWait(driver, timeout).until(
            lambda d: d.find_element(By.ID, "message").text or d.find_element(By.ID, "uploaded").text)
        return driver.find_element(By.ID, "message").text or driver.find_element(By.ID, "uploaded").text
    finally:
        driver.quit()


def drive_page(url: str, screenshot: Path, frames: int = 256, switch: str = "background=3",
               second_model: str | None = None, timeout: float = 60.0) -> dict:
    """Open the page, start a stream (side by side with `second_model` when given), switch the prompt once frames
    are on screen, and save a screenshot once the switch has streamed. Returns what the page showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        wait.until(lambda d: d.find_element(By.ID, "model").find_elements(By.TAG_NAME, "option"))
        if second_model:
            Select(driver.find_element(By.ID, "model2")).select_by_value(second_model)
        box = driver.find_element(By.ID, "frames")
        box.clear()
        box.send_keys(str(frames))
        driver.find_element(By.ID, "start").click()
        wait.until(lambda d: d.execute_script("return document.body.dataset.firstChunkS"))
        first_on_screen = float(driver.execute_script("return document.body.dataset.firstChunkS"))
        driver.find_element(By.ID, "switchPrompt").send_keys(switch)
        wait.until(lambda d: d.find_element(By.ID, "switch").is_enabled())
        driver.find_element(By.ID, "switch").click()
        wait.until(lambda d: "switched to" in d.find_element(By.ID, "message").text)
        switched = driver.find_element(By.ID, "message").text
        time.sleep(1.0)  # the switched chunks on screen
        driver.save_screenshot(str(screenshot))
        canvases = driver.execute_script("""
            return [...document.querySelectorAll('canvas')].map((c) => {
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let lo = 255, hi = 0;
              for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
              return {width: c.width, height: c.height, range: hi - lo};
            });""")
        stats = {k: driver.find_element(By.ID, k).text for k in ("fps", "latency", "frame", "dropped")}
        return {"first_chunk_on_screen_s": first_on_screen, "switched": switched, "canvases": canvases, **stats,
                "message": driver.find_element(By.ID, "message").text}
    finally:
        driver.quit()
