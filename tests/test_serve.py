"""`mirai serve` in-process, as the page uses it: a stream is the pipeline's own video chunk by chunk, a switch is the
pipeline's switch at the chunk it reports, two sessions stream at once, the cap answers busy, a slow viewer's queue
stays bounded, bad uploads and bad messages are one message each, and no token means no entry."""

import asyncio
import base64
import io
import signal
import socket
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from mirai import checkpoint as ckpt
from mirai.cli import main
from mirai.config import ConfigError, WorldConfig
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip
from mirai.serve.app import Server, ServeSettings
from mirai.serve.server import check_port, load_models, model_name
from mirai.serve.streams import Engine, Outbox
from tests.conftest import make_caption_run, make_model
from tests.harness.serving import free_port, watch

WORLD = {"image_size": 16, "sprite_sizes": [5]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = make_model(prompt_vocab=PROMPT.vocab(WorldConfig(**WORLD)), seed=3)
    folder = tmp_path_factory.mktemp("serve") / "run"
    folder.mkdir()
    ckpt.save_model(model, folder / "model.safetensors",
                    {"settings": {"world": WORLD, "data": {"clip_frames": 8}, "sample": {"steps": 2}}})
    return folder


@pytest.fixture
def server(run, tmp_path):
    def make(**settings):
        models = load_models([f"a={run}", f"b={run}"], "cpu", [])
        return Server(models, ServeSettings(**settings), tmp_path)
    return make


def pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def receive_until(ws, kind: str, limit: int = 500) -> tuple[dict, list[dict]]:
    """Messages up to the first of `kind`: (that one, the chunk messages before it)."""
    chunks = []
    for _ in range(limit):
        message = ws.receive_json()
        if message["type"] == kind:
            return message, chunks
        if message["type"] == "chunk":
            chunks.append(message)
        elif message["type"] in ("error", "busy") and kind not in ("error", "busy"):
            raise AssertionError(message)
    raise AssertionError(f"no {kind} message")


def start_stream(ws, **start) -> None:
    """Past the hello, start a stream and wait for its first chunk."""
    ws.receive_json()
    ws.send_json({"op": "start", **start})
    receive_until(ws, "chunk")


def streamed_frames(chunks: list[dict], lane: int = 0) -> np.ndarray:
    return np.stack([pixels(url) for chunk in chunks for url in chunk["lanes"][lane]])


def expected_video(server, request_of) -> np.ndarray:
    pipe = server.models["a"]
    return pipe.video(request_of(pipe))[0][0]


def test_a_stream_is_the_pipelines_video_chunk_by_chunk_and_downloads_as_mp4(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_json({"op": "start", "models": ["a"], "seed": 4, "frames": 12, "prompt": "background=2"})
        started, _ = receive_until(ws, "started")
        done, chunks = receive_until(ws, "done")
        assert started["frames"] == 12 and len(chunks) == done["chunks"] == 6
        assert done["first_chunk_s"] > 0 and done["fps"] > 0 and done["dropped"] == 0

        def request(pipe):
            r = pipe.inputs(1, 12, seed=4)
            r.inputs.prompt = pipe.switch_prompt(r, "background=2")
            return r
        assert np.array_equal(streamed_frames(chunks), expected_video(s, request))
        assert not np.array_equal(streamed_frames(chunks), expected_video(s, lambda p: p.inputs(1, 12, seed=4)))
        video = client.get(done["download"])
        assert video.status_code == 200 and iio.imread(video.content, extension=".mp4").shape[:3] == (12, 16, 16)
        assert client.get("/download/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_a_switch_is_the_pipelines_switch_at_the_chunk_it_reports(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        start_stream(ws, seed=1, frames=40)
        ws.send_json({"op": "switch", "prompt": "background=5", "recache": True})
        switched, _ = receive_until(ws, "switched")
        done, chunks = receive_until(ws, "done")
    ws_frames = streamed_frames(chunks)
    fpc = s.models["a"].model.cfg.frames_per_chunk
    at = switched["chunk"] * fpc
    whole = expected_video(s, lambda p: p.with_switch(p.inputs(1, 40, seed=1), at, "background=5"))
    assert np.array_equal(ws_frames, whole[len(whole) - len(ws_frames):])  # the chunks after the first one received


def test_pause_holds_the_stream_and_resume_goes_on(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        start_stream(ws, seed=0, frames=1000)
        ws.send_json({"op": "pause"})
        time.sleep(0.5)  # what was already made arrives; then nothing more
        session = next(iter(s.engine.sessions.values()))
        made = session.chunks
        time.sleep(0.5)
        assert session.chunks == made and session.remaining > 0
        ws.send_json({"op": "resume"})
        deadline = time.time() + 20
        while session.chunks == made and time.time() < deadline:
            time.sleep(0.05)
        assert session.chunks > made
        ws.send_json({"op": "stop"})
        done, _ = receive_until(ws, "done")
        assert done["chunks"] < 500


def test_two_sessions_stream_at_once_each_its_own_video(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as one, client.websocket_connect("/ws") as two:
        for ws, seed in ((one, 5), (two, 6)):
            ws.receive_json()
            ws.send_json({"op": "start", "seed": seed, "frames": 8})
        both = [receive_until(ws, "done")[1] for ws in (one, two)]
    for chunks, seed in zip(both, (5, 6)):
        assert np.array_equal(streamed_frames(chunks), expected_video(s, lambda p, k=seed: p.inputs(1, 8, seed=k)))


def test_side_by_side_streams_two_models_from_the_same_seed_and_prompt(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"op": "start", "models": ["a", "b"], "seed": 2, "frames": 6})
        started, _ = receive_until(ws, "started")
        _, chunks = receive_until(ws, "done")
    assert started["lanes"] == ["a", "b"]
    expected = expected_video(s, lambda p: p.inputs(1, 6, seed=2))
    assert np.array_equal(streamed_frames(chunks, 0), expected) and np.array_equal(streamed_frames(chunks, 1), expected)


def test_the_cap_answers_busy_and_a_viewer_who_leaves_frees_the_session(server):
    s = server(max_sessions=1, max_frames=4000)
    with TestClient(s.app()) as client:
        with client.websocket_connect("/ws") as one:
            one.receive_json()
            one.send_json({"op": "start", "frames": 4000})
            receive_until(one, "chunk")
            session = next(iter(s.engine.sessions.values()))
            with client.websocket_connect("/ws") as two:
                two.receive_json()
                two.send_json({"op": "start", "frames": 8})
                busy, _ = receive_until(two, "busy")
                assert "cap of 1" in busy["message"]
        deadline = time.time() + 20
        while s.engine.active() and time.time() < deadline:
            time.sleep(0.05)
        assert s.engine.active() == 0 and session.stopped  # the viewer left: its rollout and cache are gone
        assert session.remaining > 0  # stopped there, not run to its end
        with client.websocket_connect("/ws") as three:
            three.receive_json()
            three.send_json({"op": "start", "frames": 4})
            assert receive_until(three, "done")[0]["chunks"] == 2


@pytest.mark.parametrize("message, error", [
    ("not json", "a message is JSON"),
    ('{"op": "fly"}', "a message is JSON"),
    ('{"op": "start", "seed": -1}', "seed must be a whole number"),
    ('{"op": "start", "frames": 99999}', "frames must be a whole number from 1 to 1024"),
    ('{"op": "start", "models": ["c"]}', "models must name one or two of a, b"),
    ('{"op": "start", "prompt": "colour=red"}', "prompt edit 'colour=red'"),
    ('{"op": "start", "upload": "nope"}', "that upload is gone"),
    ('{"op": "switch", "prompt": "background=1"}', "no stream is running"),
])
def test_a_bad_message_is_one_error_and_the_socket_still_serves(server, message, error):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(message)
        answer = ws.receive_json()
        assert answer["type"] == "error" and error in answer["message"]
        ws.send_json({"op": "start", "frames": 2})
        assert receive_until(ws, "done")[0]["chunks"] == 1


def test_a_bad_switch_mid_stream_is_one_error_and_the_stream_goes_on(server):
    s = server()
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"op": "start", "frames": 200})
        receive_until(ws, "chunk")
        ws.send_json({"op": "switch", "prompt": "sprite1.color=99"})
        error, _ = receive_until(ws, "error")
        assert "sprite1.color takes an id" in error["message"]
        ws.send_json({"op": "stop"})
        assert receive_until(ws, "done")[0]["chunks"] >= 1


def png(frame: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", frame, extension=".png")


@pytest.mark.parametrize("body, status, error", [
    (b"", 400, "the upload is empty"),
    (b"just some text, not a picture", 400, "not a picture or a video"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 400, "cannot read the upload"),
    (b"\x89PNG" + b"\x00" * (2 * 2**20), 413, "over the limit of 1 MiB"),
])
def test_a_bad_upload_is_one_message_and_the_server_still_serves(server, body, status, error):
    s = server(max_upload_mb=1)
    with TestClient(s.app()) as client:
        answer = client.post("/api/upload", content=body)
        assert answer.status_code == status and error in answer.json()["error"]
        assert client.get("/api/info").status_code == 200


def test_an_uploaded_clip_is_continued_and_streamed_first(server):
    s = server()
    clip = (make_clip(WorldConfig(**WORLD), 9, 0, 4).frames * 255).round().astype(np.uint8)
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        image = client.post("/api/upload", content=png(clip[0])).json()
        assert image["frames"] == 1 and image["width"] == 16
        movie = client.post("/api/upload", content=iio.imwrite("<bytes>", clip, extension=".gif")).json()
        ws.receive_json()
        ws.send_json({"op": "start", "frames": 4, "upload": movie["upload"]})
        _, chunks = receive_until(ws, "done")
    expected = expected_video(s, lambda p: p.inputs(1, 4, seed=0, context=iio.imread(
        iio.imwrite("<bytes>", clip, extension=".gif"), index=None)[..., :3]))
    assert len(chunks) == 3 and np.array_equal(streamed_frames(chunks), expected)  # context chunks, then 2 new


def test_without_the_token_nothing_gets_in(server):
    s = server(token="s3cret")
    with TestClient(s.app()) as client:
        assert client.get("/").status_code == 403 and client.get("/api/info").status_code == 403
        assert client.post("/api/upload", content=b"x").status_code == 403
        assert client.get("/api/info?token=wrong").status_code == 403
        assert client.get("/api/info?token=s3cret").status_code == 200
        assert client.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with pytest.raises(Exception), client.websocket_connect("/ws") as ws:
            ws.receive_json()
        with client.websocket_connect("/ws?token=s3cret") as ws:
            assert ws.receive_json()["type"] == "hello"


def test_a_slow_viewers_queue_stays_bounded_and_keeps_control_messages():
    class Loop:
        def call_soon_threadsafe(self, fn):
            fn()
    box = Outbox(Loop(), max_chunks=4)
    for i in range(100):
        box.put({"type": "chunk", "index": i})
    box.put({"type": "done"})
    assert box.waiting() == 5 and box.dropped == 96
    assert [m["index"] for m in list(box.chunks)] == [96, 97, 98, 99] and box.control[0]["type"] == "done"


def test_a_viewer_who_never_reads_costs_the_engine_nothing_and_holds_at_most_its_queue(run, tmp_path):
    loop = asyncio.new_event_loop()  # never run: nobody takes from this viewer's box
    box, engine = Outbox(loop, max_chunks=4), Engine(max_sessions=2, downloads=tmp_path)
    pipe = load_models([str(run)], "cpu", [])["run"]
    session = engine.open([("run", pipe, pipe.inputs(1, 100, seed=0))], box)
    deadline = time.time() + 60
    while engine.active() and time.time() < deadline:
        time.sleep(0.05)
    engine.shutdown()
    loop.close()
    assert session.chunks == 50 and len(box.chunks) == 4 and box.dropped == 46  # it streamed to the end
    assert [m["index"] for m in box.chunks] == [46, 47, 48, 49] and box.control[-1]["type"] == "done"


def test_ctrl_c_stops_the_server_cleanly_mid_stream(run):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mirai", "serve", "--ckpt", str(run), "--port", str(port)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        result = asyncio.run(watch(f"http://127.0.0.1:{port}", {"frames": 1000}, seconds=1.0))
        assert result["chunks"] > 0
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
    err = server.stderr.read()
    assert "serving run on http://127.0.0.1:" in err and err.rstrip().endswith("stopped") and "Traceback" not in err


def test_models_load_once_each_named_and_a_teacher_is_refused(run, tmp_path):
    assert model_name("base=runs/x", set()) == ("base", "runs/x")
    assert model_name(str(run), set())[0] == "run" and model_name(str(run), {"run"})[0].endswith("/run")
    models = load_models([str(run)], "cpu", [])
    assert models["run"].cfg.sample.window_chunks == 3 and models["run"].cfg.sample.sink_chunks == 1  # trained range
    with pytest.raises(ConfigError, match="named 'x'"):
        load_models([f"x={run}", f"x={run}"], "cpu", [])
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    ckpt.save_model(make_model("bidirectional", prompt_vocab=PROMPT.vocab(WorldConfig(**WORLD))),
                    teacher / "model.safetensors", {"settings": {"world": WORLD}})
    with pytest.raises(ConfigError, match="bidirectional model"):
        load_models([str(teacher)], "cpu", [])


def test_a_port_in_use_is_one_clear_error(run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port("127.0.0.1", port)
        assert main(["serve", "--ckpt", str(run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "pick another --port" in err


def test_a_caption_model_streams_its_caption_and_switches_to_another(tmp_path_factory):
    pytest.importorskip("transformers")
    run = make_caption_run(tmp_path_factory.mktemp("captions"))
    s = Server(load_models([f"text={run}"], "cpu", []), ServeSettings(), tmp_path_factory.mktemp("recordings"))
    with TestClient(s.app()) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["models"][0]["prompt"] == "caption"
        ws.send_json({"op": "start", "seed": 2, "frames": 4, "prompt": "clip a of the world"})
        _, chunks = receive_until(ws, "done")
        ws.send_json({"op": "start", "seed": 2, "frames": 40, "prompt": "clip a of the world"})
        receive_until(ws, "chunk")
        ws.send_json({"op": "switch", "prompt": "clip b", "recache": False})
        switched, _ = receive_until(ws, "switched")
    pipe = s.models["text"]
    assert np.array_equal(streamed_frames(chunks), pipe.video(pipe.inputs(1, 4, 2, prompt="clip a of the world"))[0][0])
    assert switched["prompt"] == "clip b" and not switched["recache"]


def test_every_session_shares_the_one_loaded_model(server):
    s = server()
    one, two = s.lanes({"op": "start", "models": ["a"]}), s.lanes({"op": "start", "models": ["a"], "seed": 1})
    assert one[0][1] is two[0][1] is s.models["a"]  # one load per checkpoint; each session its own request
    assert not torch.equal(one[0][2].inputs.noise, two[0][2].inputs.noise)
    s.engine.shutdown()
