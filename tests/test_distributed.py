"""Multi-process training (2 gloo processes under torchrun) against one process with the same global batch.

One torchrun launch (a module fixture) trains every multi-process run of this file in turn (tests/dist_worker.py);
the single-process references train here. fp32 throughout: the runs differ only in how sums are ordered.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mirai import checkpoint as ckpt
from mirai.config import ConfigError, config_from_dict
from mirai.models.build import build_model
from mirai.rng import BatchGenerator, rand, randn
from mirai.training import rank_rows
from mirai.training.loop import train
from mirai.training.stage import resolve_model_config

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # max |difference| of any weight, EMA or optimiser tensor after the steps (observed: ~1e-8)

TOY = {
    "world": {"image_size": 16, "sprite_sizes": [5], "num_patterns": 1},
    "model": {"preset": "tiny", "dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
    "data": {"clip_frames": 4},
    "sample": {"timesteps": [1000, 500], "solver": "renoise", "context_noise": 0.1},
    "train": {"batch_size": 4, "sample_every": 0, "log_every": 1, "precision": "fp32", "warmup_steps": 1,
              "ema_decay": 0.9, "threads": 1, "lr": 3e-3},
}


def config(out: Path, steps: int = 3, **sections) -> dict:
    data = json.loads(json.dumps(TOY))
    data["train"].update({"steps": steps, "ckpt_every": 2, "out_dir": str(out)})
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return data


def dmd_config(out: Path, models: Path, **sections) -> dict:
    base = {"train": {"objective": "dmd", "init_from": str(models / "student.safetensors"), "loss_t_floor": 1.0},
            "dmd": {"teacher": str(models / "teacher.safetensors"), "critic_updates_per_gen": 2, "real_cfg_scale": 2.0},
            "foresight": {"enabled": True, "weight": 0.5}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config(out, steps=4, **base)


def ode_config(out: Path, models: Path) -> dict:
    student = str(models / "student.safetensors")
    return config(out, steps=2, train={"objective": "ode", "init_from": student},
                  distill={"teacher": student, "num_videos": 6, "shard_size": 2, "teacher_steps": 2})


def write_models(folder: Path) -> Path:
    """A random bidirectional teacher and causal student of the toy size (non-zero everywhere)."""
    m = resolve_model_config(config_from_dict(config(folder))).model
    for name, attention, seed in (("teacher", "bidirectional", 1), ("student", "causal", 2)):
        torch.manual_seed(seed)
        model = build_model(dataclasses.replace(m, attention=attention))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        ckpt.save_model(model, folder / f"{name}.safetensors")
    return folder


def tensors(run: Path) -> dict[str, torch.Tensor]:
    """Everything a run's training state holds but the global RNG state (per process, not trained); the ranks'
    rows (replay buffer) joined in rank order, as one process holds them in its state file."""
    state, meta = ckpt.load(run / "ckpt.safetensors")
    files = sorted(rank_rows.step_folder(run / "ckpt.safetensors", meta["step"]).glob("rank_*.safetensors"))
    assert len(files) == (meta["rows_world"] if meta["rows_world"] > 1 else 0)
    ranks = [ckpt.load(f)[0] for f in files]
    joined = {f"extra.{k}": torch.cat([r[k] for r in ranks]) for k in (ranks[0] if ranks else {})}
    return {k: v for k, v in {**state, **joined}.items() if k != "rng.torch"}


def max_diff(a: Path, b: Path) -> float:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    return max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)


def torchrun(jobs: list[dict], folder: Path) -> None:
    (folder / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dist_worker.py"), str(folder / "jobs.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every 2-process run of this file, from one torchrun launch; returns its folder."""
    root = tmp_path_factory.mktemp("dist")
    models = write_models(root / "models")
    torch.set_num_threads(1)
    train(config_from_dict(config(root / "one_to_two", steps=4)), stop_at=2, quiet=True)  # resumed by 2 ranks
    train(config_from_dict(dmd_config(root / "dmd_one_to_two", models)), stop_at=2, quiet=True)  # its replay too
    ddp_all = {"generator": "ddp", "critic": "ddp", "predictor": "ddp"}
    fsdp_all = {"generator": "fsdp", "critic": "fsdp", "predictor": "fsdp", "teacher": "fsdp"}
    jobs = [
        {"config": config(root / "tf_ddp")},
        {"config": config(root / "tf_wrong_rows"), "wrong_rows": True},
        {"config": config(root / "tf_fsdp", dist={"generator": "fsdp"})},
        {"config": config(root / "tf_accum", dist={"grad_accum": 2})},  # 2 ranks x 2 micro-batches of 1
        {"config": dmd_config(root / "dmd_ddp", models, dist=ddp_all)},
        {"config": dmd_config(root / "dmd_fsdp", models, dist=fsdp_all)},
        {"config": config(root / "two_to_one", steps=4), "stop_at": 2},  # resumed by 1 process
        {"config": config(root / "one_to_two", steps=4)},
        {"config": dmd_config(root / "dmd_two_to_one", models, dist=fsdp_all), "stop_at": 3},
        {"config": ode_config(root / "ode", models)},
        {"config": dmd_config(root / "dmd_one_to_two", models, dist=ddp_all)},
        {"config": dmd_config(root / "dmd_resume", models, dist=ddp_all), "stop_at": 2},
        {"config": dmd_config(root / "dmd_resume", models, dist=ddp_all), "plant_orphan": 4},  # a killed step 4
        {"config": config(root / "fsdp_resume", steps=4, dist={"generator": "fsdp"}), "stop_at": 2},
        {"config": config(root / "fsdp_resume", steps=4, dist={"generator": "fsdp"}), "count_reads": True},
    ]
    torchrun(jobs, root)
    return root


@pytest.fixture(scope="module")
def one(runs):
    """The single-process references (same global batch)."""
    ref = runs / "one"
    train(config_from_dict(config(ref / "tf")), quiet=True)
    train(config_from_dict(config(ref / "tf4", steps=4)), quiet=True)
    train(config_from_dict(dmd_config(ref / "dmd", runs / "models")), quiet=True)
    train(config_from_dict(ode_config(ref / "ode", runs / "models")), quiet=True)
    return ref


def test_ddp_teacher_forcing_equals_one_process_with_the_global_batch(runs, one):
    assert max_diff(runs / "tf_ddp", one / "tf") < TOL
    # The comparison would catch a wrong sharding: every rank training on rank 0's rows is far off.
    assert max_diff(runs / "tf_wrong_rows", one / "tf") > 100 * TOL
    logged = [json.loads(line)["loss"] for line in (runs / "tf_ddp" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["loss"] for line in (one / "tf" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(expected, rel=1e-5)  # the logged loss is the global batch's


def test_fsdp_teacher_forcing_equals_one_process(runs, one):
    assert max_diff(runs / "tf_fsdp", one / "tf") < TOL
    a, b = (ckpt.load(r / "model.safetensors") for r in (runs / "tf_fsdp", one / "tf"))
    assert a[0].keys() == b[0].keys() and a[1]["model"] == b[1]["model"]  # the exported model's format
    assert max((a[0][k] - b[0][k]).abs().max().item() for k in a[0]) < TOL


def test_gradient_accumulation_across_ranks_equals_one_batch(runs, one):
    assert max_diff(runs / "tf_accum", one / "tf") < TOL


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dmd_with_foresight_equals_one_process(runs, one, strategy):
    run = runs / f"dmd_{strategy}"
    assert max_diff(run, one / "dmd") < TOL
    state, meta = ckpt.load(run / "ckpt.safetensors")
    assert any(k.startswith("predictor.") for k in state) and not any(k.startswith("extra.rows.") for k in state)
    for rank in (0, 1):  # each rank's own rows, in its own file stamped with the step
        rows, stamp = ckpt.load(rank_rows.rank_file(run / "ckpt.safetensors", meta["step"], rank))
        assert rows["rows.replay.0.hidden"].shape[0] == TOY["train"]["batch_size"] // 2
        assert (stamp["step"], stamp["rank"], stamp["world"]) == (meta["step"], rank, 2)
    reference = ckpt.load(one / "dmd" / "ckpt.safetensors")[0]
    assert reference["extra.rows.replay.0.hidden"].shape[0] == TOY["train"]["batch_size"]  # one process: inside


def test_replay_rows_resume_exactly_on_the_same_and_another_world_size(runs, one):
    assert max_diff(runs / "dmd_resume", one / "dmd") < TOL  # 2 ranks wrote step 2 (and a killed step 4), 2 went on
    assert max_diff(runs / "dmd_one_to_two", one / "dmd") < TOL  # 1 process wrote step 2, 2 ranks went on
    folders = sorted(p.name for p in (runs / "dmd_resume" / "replay").iterdir())
    assert folders == ["step_00000004"]  # the committed step's rank files alone
    stamps = [ckpt.read_meta(f)["step"] for f in (runs / "dmd_resume" / "replay" / folders[0]).iterdir()]
    assert stamps == [4, 4]  # the killed step's stale files were replaced, not kept


def test_ode_pairs_are_split_across_ranks_and_the_stage_trains_alike(runs, one):
    shards = sorted((one / "ode" / "ode_pairs").glob("shard_*.safetensors"))
    assert len(shards) == 3  # rank 0 wrote shards 0 and 2, rank 1 shard 1
    for shard in shards:
        a, b = ckpt.load(shard)[0], ckpt.load(runs / "ode" / "ode_pairs" / shard.name)[0]
        assert all(torch.equal(a[k], b[k]) for k in a), shard.name
    assert max_diff(runs / "ode", one / "ode") < TOL


def test_checkpoints_resume_on_another_world_size(runs, one):
    assert max_diff(runs / "one_to_two", one / "tf4") < TOL  # 1 process wrote step 2, 2 ranks went on
    train(config_from_dict(config(runs / "two_to_one", steps=4)), quiet=True)
    assert max_diff(runs / "two_to_one", one / "tf4") < TOL  # 2 ranks wrote step 2, 1 process went on
    steps = [json.loads(line)["step"] for line in (runs / "two_to_one" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_dmd_checkpoint_of_sharded_ranks_resumes_in_one_process(runs, one):
    train(config_from_dict(dmd_config(runs / "dmd_two_to_one", runs / "models")), quiet=True)
    assert max_diff(runs / "dmd_two_to_one", one / "dmd") < TOL


def test_sharded_resume_is_exact_and_each_rank_reads_only_its_rows(runs, one):
    assert max_diff(runs / "fsdp_resume", one / "tf4") < TOL  # 2 sharded ranks wrote step 2 and went on
    reads = [json.loads((runs / "fsdp_resume" / f"reads_{r}.json").read_text()) for r in (0, 1)]
    with safe_open(runs / "fsdp_resume" / "ckpt.safetensors", "pt") as f:
        sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    sharded = [k for k in sizes if k.startswith(("model.", "ema.", "optim_model.")) and len(sizes[k]) and sizes[k][0] > 1]
    assert sharded and all(k in reads[0] for k in sharded)
    for k in sharded:  # the two ranks' rows make the tensor once, neither read it whole
        assert reads[0][k] + reads[1].get(k, 0) == torch.Size(sizes[k]).numel(), k
        assert max(reads[0][k], reads[1].get(k, 0)) < torch.Size(sizes[k]).numel(), k


# --------------------------------------------------------------------------------------------------
# One process: the pieces the multi-process runs rest on


def test_rank_rows_are_re_split_and_a_stale_or_missing_rank_file_is_refused(tmp_path):
    state = tmp_path / "ckpt.safetensors"
    rows = [torch.arange(6.0).reshape(3, 2), torch.arange(6.0, 12.0).reshape(3, 2)]
    for rank, r in enumerate(rows):
        ckpt.atomic_save({"rows.x": r}, rank_rows.rank_file(state, 2, rank), {"step": 2, "rank": rank, "world": 2})
    assert torch.equal(rank_rows.load(state, 2, 2)["rows.x"], torch.cat(rows))  # one process: every row, in order
    ckpt.atomic_save({"rows.x": rows[1]}, rank_rows.rank_file(state, 2, 1), {"step": 1, "rank": 1, "world": 2})
    with pytest.raises(ckpt.CheckpointError, match="rank_00001.safetensors is stamped .* stale"):
        rank_rows.load(state, 2, 2)
    rank_rows.rank_file(state, 2, 1).unlink()
    with pytest.raises(ckpt.CheckpointError, match="not found: .*rank_00001.safetensors"):
        rank_rows.load(state, 2, 2)


def test_batch_generator_rows_are_the_rows_of_the_global_draw():
    full = BatchGenerator(3)
    want_n, want_u = randn((4, 2), full), rand((4, 1), full)
    parts = []
    for first in (0, 2):
        gen = BatchGenerator(3)
        with gen.rows(first, 4):
            parts.append((randn((2, 2), gen), rand((2, 1), gen)))
        assert torch.equal(gen.get_state(), full.get_state())  # every holder's generator stays in step
    assert torch.equal(torch.cat([p[0] for p in parts]), want_n) and torch.equal(torch.cat([p[1] for p in parts]), want_u)
    own = randn((2, 2), BatchGenerator(3))  # drawing only one's own rows would give rank 1 rank 0's numbers
    assert not torch.equal(own, want_n[2:])


def test_gradient_accumulation_equals_one_batch(tmp_path):
    train(config_from_dict(config(tmp_path / "one")), quiet=True)
    train(config_from_dict(config(tmp_path / "accum", dist={"grad_accum": 2})), quiet=True)
    assert max_diff(tmp_path / "accum", tmp_path / "one") < TOL


def test_activation_checkpointing_recomputes_blocks_and_gives_the_same_gradients():
    model = build_model(resolve_model_config(config_from_dict(config(Path("unused")))).model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(2, 4, 3, 16, 16), torch.rand(2, 4)
    grads, calls = [], []
    for on in (False, True):
        model.zero_grad()
        model.checkpoint_blocks = on
        count = [0]
        hook = model.blocks[0].register_forward_pre_hook(lambda *a: count.__setitem__(0, count[0] + 1))
        model(x, t).square().mean().backward()
        hook.remove()
        calls.append(count[0])
        grads.append([p.grad.clone() for p in model.parameters()])
    assert calls == [1, 2]  # the block ran again in backward
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads))


def test_a_global_batch_that_does_not_split_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size=4 .* not divisible by dist.grad_accum=3"):
        config_from_dict(config(tmp_path, dist={"grad_accum": 3}))
    with pytest.raises(ConfigError, match="set train.precision=bf16"):
        config_from_dict(config(tmp_path, dist={"generator": "fsdp", "param_dtype": "bf16"}))
    config_from_dict(dmd_config(tmp_path, tmp_path, dist={"grad_accum": 2}))  # DMD accumulates too
    with pytest.raises(ConfigError, match="dmd.term_grad_every .* dist.grad_accum=2"):
        config_from_dict(dmd_config(tmp_path, tmp_path, dist={"grad_accum": 2}, dmd={"term_grad_every": 1}))
    with pytest.raises(ConfigError, match="dist.frozen_dtype must be 'fp32' or 'bf16', got 'fp16'"):
        config_from_dict(dmd_config(tmp_path, tmp_path, dist={"frozen_dtype": "fp16"}))
