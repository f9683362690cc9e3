"""`mirai serve` as a person uses it: the page in headless Chromium starts a stream of the shipped student,
switches the prompt, and its screenshot shows frames; and eight viewers stream at once with no error (the full
60-second load test with its memory figures is scripts/serve_check.py)."""

import numpy as np
import pytest
from PIL import Image

from mirai.serve.server import load_models, shipped_student
from tests.harness.serving import CHROMEDRIVER, CHROMIUM, drive_page, load_test, running_server, upload_on_page


@pytest.fixture(scope="module")
def student():
    return load_models([f"student={shipped_student()}", f"again={shipped_student()}"], "cpu", [])


needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and "
                                    "chromium-driver (apt-get install chromium chromium-driver)")


@needs_chromium
def test_the_page_streams_switches_and_shows_frames_in_chromium(student, tmp_path):
    shot = tmp_path / "serve.png"
    with running_server(student) as (url, server):
        seen = drive_page(url, shot, frames=512, second_model="again")
    assert seen["switched"].startswith('switched to "background=3"')
    assert seen["first_chunk_on_screen_s"] > 0 and seen["latency"].startswith("first chunk ")
    assert [c["width"] for c in seen["canvases"]] == [32, 32] and all(c["range"] > 40 for c in seen["canvases"])
    assert int(seen["frame"].split()[1]) > 0 and seen["message"].startswith("switched")
    picture = np.asarray(Image.open(shot).convert("RGB"))
    lanes = picture[picture.shape[0] // 3 :]  # the canvases are below the controls
    assert lanes.std() > 10 and len(np.unique(lanes.reshape(-1, 3), axis=0)) > 50  # frames drawn, not blank


@needs_chromium
def test_a_bad_upload_is_one_message_on_the_page_and_a_good_one_is_taken(student, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture at all")
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "frame.png")
    with running_server(student) as (url, server):
        assert "not a picture or a video" in upload_on_page(url, tmp_path / "notes.png")
        assert upload_on_page(url, tmp_path / "frame.png") == "1 frame(s), 60x40"
        assert server.engine.active() == 0


def test_eight_viewers_stream_at_once_with_no_error(student):
    with running_server(student) as (url, server):
        result = load_test(url, viewers=8, seconds=6, start={"frames": 64})
        assert server.engine.active() <= 8
    assert result["errors"] == 0 and all(f > 0 for f in result["frames_per_viewer"]), result
