import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.training.distill import ODEPairDataset, teacher_grid, teacher_trajectories, write_shard
from mirai.diffusion.schedule import FlowSchedule
from tests.conftest import make_model


def test_teacher_grid_passes_through_every_student_timestep():
    student = [1.0, 0.75, 0.5, 0.25]
    grid, where = teacher_grid(student, 16)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == 17
    assert [grid[i] for i in where] == student
    assert all(a > b for a, b in zip(grid[:-1], grid[1:]))


def euler_reference(teacher, noise, grid):
    """The AR teacher's Euler ODE written out, without a KV cache: each chunk integrates over `grid` while
    attending (block-causal mask) to the clean chunks before it. Returns the states on the grid and the video."""
    fpc = teacher.cfg.frames_per_chunk
    clean, states = [], []
    for i in range(noise.shape[1] // fpc):
        x, path = noise[:, i * fpc : (i + 1) * fpc], []
        for t, t_next in zip(grid[:-1], grid[1:]):
            path.append(x)
            seq = torch.cat(clean + [x], dim=1)
            t_frames = torch.zeros(seq.shape[:2])
            t_frames[:, -fpc:] = t
            x = x + (t_next - t) * teacher(seq, t_frames)[:, -fpc:]
        states.append(torch.stack(path + [x], dim=1))
        clean.append(x)
    return torch.cat(states, dim=2), torch.cat(clean, dim=1)


def test_trajectories_start_at_the_noise_and_end_at_the_teacher_sample():
    teacher, sched = make_model(), FlowSchedule()
    noise = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        states, clean = teacher_trajectories(teacher, sched, noise, None, [1.0, 0.5], teacher_steps=4)
        grid, where = teacher_grid([1.0, 0.5], 4)
        ref_states, ref_clean = euler_reference(teacher, noise, grid)
    assert states.shape == (2, 2, 4, 3, 16, 16)
    assert torch.equal(states[:, 0], noise)  # the state at t = 1 is the noise itself
    assert (clean - ref_clean).abs().max() < 1e-4
    assert (states - ref_states[:, where]).abs().max() < 1e-4  # the stored states sit on the student's timesteps
    assert not torch.allclose(states[:, 1], noise, atol=1e-2)  # and the ODE did move


def test_pairs_written_then_read_back_are_identical(tmp_path):
    states, clean = torch.randn(3, 4, 4, 3, 8, 8).half(), torch.randn(3, 4, 3, 8, 8).half()
    prompt, ts = torch.randint(0, 5, (3, 10)), torch.tensor([1.0, 0.75, 0.5, 0.25])
    write_shard(tmp_path / "shard_00000.safetensors", states, clean, prompt, ts)
    write_shard(tmp_path / "shard_00001.safetensors", states[:1], clean[:1], prompt[:1], ts)
    ds = ODEPairDataset(tmp_path)
    assert len(ds) == 4 and torch.equal(ds.timesteps, ts)
    for i in range(3):
        assert torch.equal(ds[i]["states"], states[i].float()) and torch.equal(ds[i]["clean"], clean[i].float())
        assert torch.equal(ds[i]["prompt"], prompt[i])
    with pytest.raises(ckpt.CheckpointError, match="no ODE pair shards"):
        ODEPairDataset(tmp_path / "empty")


class InMemoryPairs:
    """The dataset as it was before it streamed: every shard loaded and concatenated."""

    def __init__(self, folder):
        parts = [ckpt.load(f)[0] for f in sorted(folder.glob("shard_*.safetensors"))]
        self.timesteps = parts[0]["timesteps"]
        self.tensors = {k: torch.cat([p[k] for p in parts]) for k in ("states", "clean", "prompt")}

    def __getitem__(self, i):
        return {"states": self.tensors["states"][i].float(), "clean": self.tensors["clean"][i].float(),
                "prompt": self.tensors["prompt"][i]}


def test_pairs_stream_from_disk_and_equal_the_in_memory_dataset(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ts = torch.tensor([1.0, 0.5])
    for s, n in enumerate([2, 3, 1]):  # shards of unequal sizes: items numbered across them
        write_shard(tmp_path / f"shard_{s:05d}.safetensors", torch.randn(n, 2, 4, 3, 8, 8).half(),
                    torch.randn(n, 4, 3, 8, 8).half(), torch.randint(0, 5, (n, 10)), ts)
    old = InMemoryPairs(tmp_path)
    monkeypatch.setattr(ckpt, "load_file", lambda *a, **kw: pytest.fail("a shard was loaded whole"))
    ds = ODEPairDataset(tmp_path)
    assert len(ds) == 6 and torch.equal(ds.timesteps, old.timesteps)
    for i in range(6):
        a, b = ds[i], old[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), i
    with pytest.raises(IndexError):
        ds[6]
