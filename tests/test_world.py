import numpy as np

from mirai.config import WorldConfig
from mirai.data.prompt import PROMPT
from mirai.data.world import COLORS, make_clip, render, sample_scene

WORLD = WorldConfig(max_sprites=3)


def test_same_seed_same_clip_and_other_seed_other_clip():
    a, b = make_clip(WORLD, 0, 5, 8), make_clip(WORLD, 0, 5, 8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.positions, b.positions)
    assert not np.array_equal(a.frames, make_clip(WORLD, 1, 5, 8).frames)
    assert not np.array_equal(a.frames, make_clip(WORLD, 0, 6, 8).frames)


def test_clips_of_any_length_share_their_prefix():
    short, long = make_clip(WORLD, 0, 3, 8), make_clip(WORLD, 0, 3, 64)
    assert long.frames.shape == (64, 32, 32, 3)
    assert np.array_equal(short.frames, long.frames[:8])


def test_ground_truth_positions_hold_the_sprite_colour():
    for index in range(20):
        clip = make_clip(WORLD, 0, index, 16)
        for t in range(16):
            for s, sprite in enumerate(clip.scene.sprites):
                if clip.visible[t, s] < 1.0:
                    continue  # occluded: the centre may be covered
                x, y = np.round(clip.positions[t, s]).astype(int)
                px = clip.frames[t, y, x]
                base = COLORS[sprite.color]
                assert np.allclose(px, base) or np.allclose(px, base * 0.45), (index, t, s)


def test_sprites_move_and_stay_in_frame():
    clip = make_clip(WORLD, 0, 0, 64)
    step = np.linalg.norm(np.diff(clip.positions, axis=0), axis=-1)
    assert step.mean() > 0.3 and step.max() < 2 * WORLD.max_speed + 1e-3
    assert clip.positions.min() >= 0 and clip.positions.max() <= 31


def test_prompt_encodes_the_scene():
    rng = np.random.default_rng(0)
    scene = sample_scene(WORLD, rng)
    p = PROMPT.encode(scene)
    vocab = PROMPT.vocab(WORLD)
    assert len(p) == len(vocab) == 10 and all(0 <= v < n for v, n in zip(p, vocab))
    assert p[0] == scene.background + 1
    assert (p[1 + 3 * len(scene.sprites) :] == 0).all()


def test_camera_pan_moves_the_background():
    world = WorldConfig(pan_speed=1.0, occluder_prob=0.0)
    clip = render(world, sample_scene(world, np.random.default_rng(1)), 4)
    assert clip.camera.tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------
# Captions


def test_caption_says_the_ground_truth():
    from mirai.data.world import BG_TEXTURES, COLOR_NAMES, PATTERNS, SHAPES, TEXTURE_WORDS, caption

    world = WorldConfig(min_sprites=1, max_sprites=1, occluder_prob=0.5)
    behind = 0
    for index in range(30):
        clip = make_clip(world, 0, index, 24)
        text, (sprite,) = caption(world, clip), clip.scene.sprites
        words = [COLOR_NAMES[sprite.color], *(["striped"] if PATTERNS[sprite.pattern] == "striped" else []),
                 SHAPES[sprite.shape]]
        assert text.startswith(f"a {' '.join(words)} ")
        assert text.endswith(f"on a {TEXTURE_WORDS[BG_TEXTURES[clip.scene.background % 4]]} background")
        # one sprite: it is hidden in part exactly when the pillar covers it (the renderer's own visibility)
        assert ("behind a pillar" in text) == bool((clip.visible[:, 0] < 1).any())
        behind += "behind a pillar" in text
    assert 0 < behind < 30


def test_direction_of_a_path():
    from mirai.data.world import direction

    path = lambda *xy: np.array(xy, dtype=np.float32)
    assert direction(path([10, 10], [9, 10], [4, 11])) == "moves left"
    assert direction(path([0, 0], [3, -3])) == "moves up and right"
    assert direction(path([0, 0], [1, 5])) == "moves down"
    assert direction(path([5, 5], [5.6, 4.8])) == "stays in place"


def test_world_export_writes_captioned_clips_prepare_reads(tmp_path):
    from mirai.cli import main
    from mirai.data.captions import scan_folder
    from mirai.data.videos import read_source
    from mirai.data.world import caption

    assert main(["world", "export", "--clips", "3", "--frames", "9", "--out", str(tmp_path),
                 "--set", "world.image_size=16", "--set", "world.sprite_sizes=[5]"]) == 0
    world = WorldConfig(image_size=16, sprite_sizes=[5])
    entries = scan_folder(tmp_path)
    assert [e.name for e in entries] == ["clip_00000.mp4", "clip_00001.mp4", "clip_00002.mp4"]
    for i, entry in enumerate(entries):
        clip = make_clip(world, 0, i, 9)
        assert entry.caption == caption(world, clip)
        frames = read_source(entry.path)
        assert frames.shape == (9, 16, 16, 3)
        assert np.abs(frames / 255.0 - clip.frames).mean() < 0.08  # H.264 is lossy, but it is the clip
