"""Live rollouts for `mirai serve`: one engine thread steps every viewer's session a chunk at a time.

A `Session` is one viewer's stream: one `Lane` per model it watches (two for side by side, same seed and prompt),
each a `Rollout` of the sampling pipeline with its own KV cache, seed and prompt. The `Engine` owns the only thread
that calls a model: it steps the running sessions in turn (round robin, so N viewers share the machine fairly and
the models are never called from two threads), and hands each chunk to the session's `Outbox`, a bounded queue
that drops the oldest frames of a viewer too slow to take them, so the engine never waits on a socket and memory
never grows with a slow viewer. Commands (pause, resume, switch, stop) come from the web side's event loop and
take effect between chunks.
"""

from __future__ import annotations

import asyncio
import base64
import io
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image
from torch import Tensor

from ..config import ConfigError
from ..data.frames import to_uint8
from ..sampling.pipeline import Pipeline, Request
from ..sampling.rollout import Rollout


def png_data_url(frame: np.ndarray) -> str:
    """A (H, W, 3) uint8 frame as a data: URL the page draws."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)  # fast: frames are streamed, not archived
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Outbox:
    """One viewer's messages, filled by the engine thread and emptied by the viewer's socket: at most `max_chunks`
    chunk messages wait (a full box drops its oldest chunk and counts it), control messages (started, status,
    done, error) always wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int):
        self.loop, self.chunks, self.control = loop, deque(maxlen=max_chunks), deque()
        self.ready, self.lock, self.dropped = asyncio.Event(), threading.Lock(), 0

    def put(self, message: dict) -> None:
        """From any thread."""
        with self.lock:
            if message["type"] != "chunk":
                self.control.append(message)
            else:
                self.dropped += len(self.chunks) == self.chunks.maxlen
                self.chunks.append(message)
        try:
            self.loop.call_soon_threadsafe(self.ready.set)
        except RuntimeError:  # the viewer's loop is closed (the server is shutting down): nobody to tell
            pass

    async def take(self) -> list[dict]:
        """Every waiting message, control first; waits for one when none is."""
        await self.ready.wait()
        with self.lock:
            self.ready.clear()
            messages = list(self.control) + list(self.chunks)
            self.control.clear(), self.chunks.clear()
        return messages

    def waiting(self) -> int:
        with self.lock:
            return len(self.chunks) + len(self.control)


@dataclass
class Switch:
    """A prompt switch asked mid-stream: as typed, re-cache or keep, and each lane's encoding of it."""

    text: str
    recache: bool
    prompts: list[Tensor]


@dataclass
class Lane:
    """One model's rollout in a session."""

    name: str
    pipe: Pipeline
    request: Request
    run: Rollout
    decoder: object  # the autoencoder's streaming decoder (`Autoencoder.stream()`)

    @classmethod
    def start(cls, name: str, pipe: Pipeline, request: Request) -> Lane:
        return cls(name, pipe, request, pipe.start(request), pipe.autoencoder.stream())

    def decode(self, latents) -> np.ndarray:
        """(f, H, W, 3) uint8 frames of the first video's latents (1, f, C, h, w)."""
        return to_uint8(self.decoder.decode(latents.float()).cpu())[0]

    def context_frames(self) -> np.ndarray | None:
        return None if self.request.context is None else self.decode(self.request.context)

    def step(self, prompt: Tensor | None = None, recache: bool = True) -> np.ndarray:
        """The next chunk's frames, after switching to `prompt` (this lane's encoding of a switch) when given."""
        with self.pipe.autocast():
            if prompt is not None:
                self.run.switch(prompt, recache=recache)
            chunk, _ = self.run.next_chunk()
        return self.decode(chunk)


@dataclass
class Session:
    """One viewer's stream: its lanes, what the viewer asked, and what has been sent."""

    lanes: list[Lane]
    outbox: Outbox
    recording: Path  # the mp4 of what was streamed, lanes side by side
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    paused: bool = False
    stopped: bool = False
    switch: Switch | None = None  # the prompt switch waiting for the next chunk
    chunks: int = 0
    frames: int = 0
    asked_at: float = field(default_factory=time.perf_counter)
    first_chunk_s: float | None = None
    first_frames: int = 0  # frames of the first chunk (the context clip when given): fps counts the frames after it
    pending: list[tuple[str, Pipeline, Request]] | None = None  # the lanes to start, on the engine thread

    @property
    def remaining(self) -> int:
        return self.lanes[0].run.remaining

    @property
    def finished(self) -> bool:
        return self.stopped or (bool(self.lanes) and not self.remaining)

    def fps(self) -> float:
        """Frames per second from the first chunk on (the first chunk's latency is reported apart)."""
        spent = time.perf_counter() - self.asked_at - (self.first_chunk_s or 0.0)
        return (self.frames - self.first_frames) / spent if self.chunks > 1 and spent > 0 else 0.0


class Recorder:
    """The thread that writes every session's mp4 (lanes side by side), so that starting an encoder (an ffmpeg
    process, a quarter of a second) or encoding never delays a chunk. The engine hands it frames through a bounded
    queue; when a session ends the recorder closes its file and only then tells the viewer it is done, with the
    download link."""

    def __init__(self, fps: int = 16, depth: int = 256):
        self.fps, self.queue = fps, queue.Queue(maxsize=depth)
        self.writers: dict[str, object] = {}
        self.thread = threading.Thread(target=self._loop, name="mirai-recorder", daemon=True)
        self.thread.start()

    def frames(self, session: Session, frames: list[np.ndarray]) -> None:
        self.queue.put((session, np.concatenate(frames, axis=2)))  # (f, H, lanes x W, 3)

    def finish(self, session: Session, done: dict) -> None:
        """Close the session's file, then send `done` (its download link added)."""
        self.queue.put((session, done))

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self._write(*item)
            except Exception as e:  # noqa: BLE001  a failed recording (disk full) costs its download, not the stream
                session, what = item
                self.writers.pop(session.id, None)
                session.outbox.put({"type": "error", "message": f"the recording failed: {type(e).__name__}: {e}"})
                if isinstance(what, dict):
                    session.outbox.put({**what, "download": None})
        for writer in self.writers.values():
            writer.close()

    def _write(self, session: Session, what: np.ndarray | dict) -> None:
        writer = self.writers.get(session.id)
        if isinstance(what, dict):
            if writer is not None:
                self.writers.pop(session.id).close()
            what["download"] = f"/download/{session.recording.stem}" if writer is not None else None
            session.outbox.put(what)
            return
        if writer is None:
            writer = self.writers[session.id] = imageio.get_writer(session.recording, fps=self.fps,
                                                                   macro_block_size=1)
        for frame in what:
            writer.append_data(frame)


class Busy(Exception):
    """The server already runs its cap of concurrent streams."""


class Engine:
    """The one thread that calls the models: steps running sessions in turn, a chunk at a time."""

    def __init__(self, max_sessions: int, downloads: Path, keep_downloads: int = 32):
        self.max_sessions, self.downloads, self.keep_downloads = max_sessions, downloads, keep_downloads
        self.recorder = Recorder()
        self.sessions: dict[str, Session] = {}
        self.wake = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._loop, name="mirai-engine", daemon=True)
        self.thread.start()

    def open(self, lanes: list[tuple[str, Pipeline, Request]], outbox: Outbox) -> Session:
        """A new session of these lanes; Busy when the cap is reached. Its rollouts start on the engine thread."""
        with self.wake:
            if len(self.sessions) >= self.max_sessions:
                raise Busy(f"the server is streaming its cap of {self.max_sessions} sessions; try again when one ends")
            session = Session([], outbox, self.downloads / f"{secrets.token_urlsafe(12)}.mp4", pending=lanes)
            self.sessions[session.id] = session
            self.wake.notify()
        return session

    def command(self, session: Session, **changes) -> None:
        """Change a session between chunks: paused=, stopped=, switch=Switch(...)."""
        with self.wake:
            for name, value in changes.items():
                setattr(session, name, value)
            self.wake.notify()

    def close(self, session: Session) -> None:
        """Forget a session (its viewer left); the engine finishes its current chunk first."""
        self.command(session, stopped=True)

    def shutdown(self) -> None:
        with self.wake:
            self.closing = True
            for s in self.sessions.values():
                s.stopped = True
            self.wake.notify()
        self.thread.join(timeout=30)
        self.recorder.stop()

    def active(self) -> int:
        with self.wake:
            return len(self.sessions)

    # ---------------------------------------------------------------------------------------------- engine thread

    def _next(self) -> Session | None:
        """The next session to step, round robin; None when closing. Finished ones are closed and dropped."""
        with self.wake:
            while True:
                for session in [s for s in self.sessions.values() if s.finished]:
                    del self.sessions[session.id]
                    self._finish(session)
                if self.closing and not self.sessions:
                    return None
                ready = [s for s in self.sessions.values() if not s.paused or s.pending]
                if ready:
                    session = ready[0]
                    self.sessions[session.id] = self.sessions.pop(session.id)  # to the back of the turn
                    return session
                self.wake.wait()

    def _loop(self) -> None:
        while (session := self._next()) is not None:
            try:
                if session.pending:
                    self._start(session)
                else:
                    self._step(session)
            except (ConfigError, ValueError) as e:  # a bad switch: the viewer's mistake, one message, stream on
                session.outbox.put({"type": "error", "message": str(e)})
                if not session.lanes:
                    session.stopped = True
            except Exception as e:  # noqa: BLE001  a failed rollout ends its session, never the server
                session.outbox.put({"type": "error", "message": f"the stream failed: {type(e).__name__}: {e}"})
                session.stopped = True

    def _start(self, session: Session) -> None:
        lanes, session.pending = session.pending, None
        session.lanes = [Lane.start(name, pipe, request) for name, pipe, request in lanes]
        context = [lane.context_frames() for lane in session.lanes]
        if context[0] is not None:
            self._send(session, context)

    def _step(self, session: Session) -> None:
        with self.wake:
            switch, session.switch = session.switch, None
        if switch is None:
            frames = [lane.step() for lane in session.lanes]
        else:
            frames = [lane.step(prompt, switch.recache) for lane, prompt in zip(session.lanes, switch.prompts)]
        self._send(session, frames)
        if switch is not None:
            session.outbox.put({"type": "switched", "prompt": switch.text, "recache": switch.recache,
                                "chunk": session.chunks - 1})

    def _send(self, session: Session, frames: list[np.ndarray]) -> None:
        first = session.first_chunk_s is None
        if first:
            session.first_chunk_s = time.perf_counter() - session.asked_at
            session.first_frames = len(frames[0])
        session.chunks += 1
        session.frames += len(frames[0])
        session.outbox.put({"type": "chunk", "index": session.chunks - 1, "frame": session.frames - len(frames[0]),
                            "lanes": [[png_data_url(f) for f in lane] for lane in frames],
                            "first_chunk_s": session.first_chunk_s, "fps": session.fps(),
                            "dropped": session.outbox.dropped})
        self.recorder.frames(session, frames)

    def _finish(self, session: Session) -> None:
        recordings = sorted(self.downloads.glob("*.mp4"), key=lambda p: p.stat().st_mtime)
        for old in recordings[: max(0, len(recordings) - self.keep_downloads)]:  # the disk stays bounded too
            old.unlink(missing_ok=True)
        self.recorder.finish(session, {"type": "done", "frames": session.frames, "chunks": session.chunks,
                                       "first_chunk_s": session.first_chunk_s, "fps": session.fps(),
                                       "dropped": session.outbox.dropped})
