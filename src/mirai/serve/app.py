"""The web app of `mirai serve`: one page, a JSON API and one WebSocket per viewer, on Starlette.

    GET  /                 the page (serve/page.html)
    GET  /api/info         the models, their prompt layout, the limits
    POST /api/upload       an image or clip to continue (the raw bytes): {"upload": id, "frames": T} or {"error"}
    GET  /download/{id}    the mp4 of a finished stream
    WS   /ws               the stream: the viewer sends {"op": ...}, the server sends {"type": ...}

The socket's messages, viewer -> server: {"op": "start", "models": [name] or [name, name], "seed", "frames",
"prompt", "upload"}, {"op": "pause"}, {"op": "resume"}, {"op": "stop"}, {"op": "switch", "prompt", "recache"};
server -> viewer: hello, started, chunk (each lane's frames as PNG data URLs, with fps and first-chunk latency),
switched, done (with the recording's download link), busy, error. A bad message is one "error" message and the
socket stays open. Clients never name a file: uploads and recordings are named by ids the server makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config import ConfigError
from ..data.videos import DataError, read_upload
from ..sampling.pipeline import Pipeline, Request
from .streams import Busy, Engine, Outbox, Session, Switch

ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_PROMPT_CHARS = 500


@dataclass
class ServeSettings:
    """What `mirai serve` takes besides the models."""

    max_frames: int = 1024  # longest stream a viewer may ask for (model frames)
    max_sessions: int = 8  # concurrent streams; the next viewer is told the server is busy
    queue_chunks: int = 16  # chunk messages waiting per viewer; a slower viewer drops its oldest
    max_upload_mb: float = 16.0
    keep_uploads: int = 32  # uploads kept (oldest forgotten first)
    token: str | None = None  # required on every request and socket when set


class TokenGate:
    """ASGI middleware: every HTTP request and WebSocket must carry the token (`?token=` or an
    `Authorization: Bearer` header), or it is refused (403) before the app sees it."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    def allowed(self, scope) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode())
        given = (query.get("token") or [""])[0]
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode()
        if auth.startswith("Bearer "):
            given = given or auth[len("Bearer "):]
        return secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] not in ("http", "websocket") or self.allowed(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": "a token is required"})
            return
        await PlainTextResponse("forbidden: this server needs its token (?token=..., printed when it started)",
                                status_code=403)(scope, receive, send)


def model_info(name: str, pipe: Pipeline) -> dict:
    """What the page shows of a model: its kind of prompt and how to write one."""
    captions = pipe.on_cache and pipe.model.cfg.text_conditioned
    c = pipe.model.cfg
    info = {"name": name, "frames_per_chunk": c.frames_per_chunk, "frame_shape": list(c.frame_shape),
            "prompt": "caption" if captions else "world" if pipe.model.prompt_embed is not None else "none"}
    if info["prompt"] == "world":
        info["prompt_help"] = ("the scene comes from the seed; edit it with FIELD=ID, e.g. background=2, "
                               "sprite1.color=0 (fields: background, sprite1.shape, sprite1.color, ...)")
    return info


def compatible(pipes: list[Pipeline]) -> None:
    """Side by side needs models that make the same frames from the same prompt."""
    a, b = (p.model.cfg for p in pipes)
    if (a.frame_shape, a.frames_per_chunk, list(a.prompt_vocab)) != (b.frame_shape, b.frames_per_chunk,
                                                                      list(b.prompt_vocab)):
        raise ConfigError("side by side needs two models with the same frames, chunk and prompt layout")


def start_request(pipe: Pipeline, seed: int, frames: int, prompt: str, context: np.ndarray | None) -> Request:
    """One video of `frames` frames for `seed`: a caption model reads `prompt` as its caption; a world model's scene
    comes from the seed and `prompt` edits it ("background=2, sprite1.color=0")."""
    kind = model_info("", pipe)["prompt"]
    if kind == "caption":
        return pipe.inputs(1, frames, seed, prompt=prompt or None, context=context)
    request = pipe.inputs(1, frames, seed, context=context)
    if prompt.strip():
        if kind == "none":
            raise ConfigError("this model takes no prompt: leave the prompt empty")
        request.inputs.prompt = pipe.switch_prompt(request, prompt)
        request.inputs.prompts = request.inputs.prompt.cpu().numpy()
    return request


MESSAGE_FORM = 'a message is JSON {"op": ...} with op start, pause, resume, stop or switch'


def parse_message(text: str) -> dict:
    try:
        message = json.loads(text)
    except ValueError:
        raise ConfigError(MESSAGE_FORM) from None
    if not isinstance(message, dict):
        raise ConfigError(MESSAGE_FORM)
    return message


def whole_number(message: dict, key: str, low: int, high: int, default: int) -> int:
    value = message.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key} must be a whole number from {low} to {high}, got {value!r}")
    return value


def text_field(message: dict, key: str) -> str:
    value = message.get(key) or ""
    if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
        raise ConfigError(f"{key} must be text of at most {MAX_PROMPT_CHARS} characters")
    return value


class Server:
    """The app's state: the loaded models (one load per checkpoint, shared by every session), the engine, the
    uploads and the recordings' folder."""

    def __init__(self, models: dict[str, Pipeline], settings: ServeSettings, folder: Path):
        if not models:
            raise ConfigError("mirai serve needs at least one model")
        self.models, self.settings, self.folder = models, settings, folder
        self.uploads: dict[str, np.ndarray] = {}
        self.engine = Engine(settings.max_sessions, folder)

    # ------------------------------------------------------------------------------------------------ HTTP

    async def page(self, request: HttpRequest) -> HTMLResponse:
        return HTMLResponse(resources.files("mirai.serve").joinpath("page.html").read_text())

    async def info(self, request: HttpRequest) -> JSONResponse:
        s = self.settings
        return JSONResponse({"models": [model_info(n, p) for n, p in self.models.items()], "max_frames": s.max_frames,
                             "max_sessions": s.max_sessions, "sessions": self.engine.active(),
                             "max_upload_mb": s.max_upload_mb})

    async def upload(self, request: HttpRequest) -> JSONResponse:
        limit = int(self.settings.max_upload_mb * 2**20)
        if int(request.headers.get("content-length") or 0) > limit:
            return JSONResponse({"error": f"the upload is over the limit of {self.settings.max_upload_mb:g} MiB"},
                                status_code=413)
        data = bytearray()
        async for piece in request.stream():  # never more than the limit in memory, whatever the header said
            data += piece
            if len(data) > limit:
                return JSONResponse({"error": f"the upload is over the limit of {self.settings.max_upload_mb:g} MiB"},
                                    status_code=413)
        try:
            frames = await asyncio.to_thread(read_upload, bytes(data), limit)
        except DataError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        upload_id = secrets.token_urlsafe(12)
        self.uploads[upload_id] = frames
        while len(self.uploads) > self.settings.keep_uploads:
            self.uploads.pop(next(iter(self.uploads)))
        return JSONResponse({"upload": upload_id, "frames": len(frames), "height": frames.shape[1],
                             "width": frames.shape[2]})

    async def download(self, request: HttpRequest):
        name = request.path_params["id"]
        path = self.folder / f"{name}.mp4"
        if not ID.match(name) or not path.is_file():
            return PlainTextResponse("no such recording (they are kept for the latest streams only)", status_code=404)
        return FileResponse(path, media_type="video/mp4", filename="mirai-stream.mp4")

    # ------------------------------------------------------------------------------------------------ socket

    def lanes(self, message: dict) -> list[tuple[str, Pipeline, Request]]:
        """The lanes a start message asks for, each with its request; a ConfigError names what is wrong."""
        names = message.get("models") or [next(iter(self.models))]
        if not isinstance(names, list) or not 1 <= len(names) <= 2 or not all(n in self.models for n in names):
            raise ConfigError(f"models must name one or two of {', '.join(self.models)}")
        seed = whole_number(message, "seed", 0, 2**31 - 1, 0)
        frames = whole_number(message, "frames", 1, self.settings.max_frames, min(256, self.settings.max_frames))
        prompt = text_field(message, "prompt")
        upload = message.get("upload")
        if upload is not None and upload not in self.uploads:
            raise ConfigError("that upload is gone (or was never made): upload the file again")
        context = None if upload is None else self.uploads[upload]
        pipes = [self.models[n] for n in names]
        if len(pipes) == 2:
            compatible(pipes)
        return [(n, p, start_request(p, seed, frames, prompt, context)) for n, p in zip(names, pipes)]

    async def start(self, message: dict, outbox: Outbox) -> Session:
        lanes = await asyncio.to_thread(self.lanes, message)  # a caption is encoded here: off the event loop
        session = self.engine.open(lanes, outbox)
        outbox.put({"type": "started", "session": session.id, "lanes": [n for n, _, _ in lanes],
                    "frames": lanes[0][2].frames, "prompts": [str(r.inputs.prompts[0].tolist()) for _, _, r in lanes]})
        return session

    async def control(self, session: Session | None, message: dict) -> None:
        op = message["op"]
        if session is None or session.finished or not session.lanes:
            raise ConfigError(f"{op}: no stream is running (press start first)")
        if op == "switch":
            text = text_field(message, "prompt")
            # encoded here, off the event loop (a caption runs the text encoder): a bad prompt is one message and
            # the stream goes on
            prompts = await asyncio.to_thread(lambda: [lane.pipe.switch_prompt(lane.request, text)
                                                       for lane in session.lanes])
            self.engine.command(session, switch=Switch(text, bool(message.get("recache", True)), prompts))
        else:
            self.engine.command(session, **{"pause": {"paused": True}, "resume": {"paused": False},
                                            "stop": {"stopped": True}}[op])

    async def socket(self, ws: WebSocket) -> None:
        await ws.accept()
        outbox = Outbox(asyncio.get_running_loop(), self.settings.queue_chunks)
        pump = asyncio.create_task(self.pump(ws, outbox))
        outbox.put({"type": "hello", "models": [model_info(n, p) for n, p in self.models.items()],
                    "max_frames": self.settings.max_frames})
        session: Session | None = None
        try:
            while True:
                text = await ws.receive_text()
                try:
                    message = parse_message(text)
                    op = message.get("op")
                    if op == "start":
                        if session is not None:
                            self.engine.close(session)
                        session = await self.start(message, outbox)
                    elif op in ("pause", "resume", "stop", "switch"):
                        await self.control(session, message)
                    else:
                        raise ConfigError(MESSAGE_FORM)
                except Busy as e:
                    outbox.put({"type": "busy", "message": str(e)})
                except (ConfigError, DataError, ValueError) as e:
                    outbox.put({"type": "error", "message": str(e)})
        except WebSocketDisconnect:
            pass
        finally:
            if session is not None:
                self.engine.close(session)  # the viewer left: its rollout and cache are freed
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def pump(self, ws: WebSocket, outbox: Outbox) -> None:
        """Send the outbox's messages as they come; a closed socket ends it."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                for message in await outbox.take():
                    await ws.send_text(json.dumps(message))

    # ------------------------------------------------------------------------------------------------ app

    def app(self):
        @contextlib.asynccontextmanager
        async def lifespan(_app):
            yield
            self.engine.shutdown()  # Ctrl-C: the engine finishes its chunk, recordings are closed

        app = Starlette(routes=[Route("/", self.page), Route("/api/info", self.info),
                                Route("/api/upload", self.upload, methods=["POST"]),
                                Route("/download/{id}", self.download), WebSocketRoute("/ws", self.socket)],
                        lifespan=lifespan)
        return TokenGate(app, self.settings.token)

