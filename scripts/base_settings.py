"""Write the run settings (world, data, sample, schedule) into the model files of a demo base made before model
files carried them, so each file samples alike wherever it is copied (`mirai sample --ckpt
checkpoints/world/ar.safetensors`). The settings are rebuilt from the stage's config and the base's recipe, as
the demo trained it; the tensors are not touched (their checksum in each file's header stays the same). The
base's provenance.json gets the new file hashes and an `amended` entry saying what changed.
Usage: python scripts/base_settings.py [BASE]   (default: checkpoints/world)"""
import json
import sys
import time
from pathlib import Path

from mirai import checkpoint as ckpt
from mirai.config import load_config, run_settings
from mirai.data.videos import source_sha256
from mirai.demo import CONFIGS, SHARED, STAGE_CONFIGS, git_commit


def main() -> None:
    base = Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/world")
    prov_path = base / "provenance.json"
    prov = json.loads(prov_path.read_text())
    changed = False
    for name in SHARED:
        path = base / f"{name}.safetensors"
        tensors, meta = ckpt.load(path)
        if "settings" in meta:
            print(f"{path}: already carries its settings")
            continue
        cfg = load_config(CONFIGS / STAGE_CONFIGS[name], prov["recipe"][name])
        ckpt.atomic_save(tensors, path, {**meta, "settings": run_settings(cfg)})
        prov["files"][path.name].update(sha256=source_sha256(path), bytes=path.stat().st_size)
        changed = True
        print(f"{path}: settings of {STAGE_CONFIGS[name]} + the recipe written; tensors unchanged")
    if not changed:
        return
    prov.setdefault("amended", []).append(
        {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": git_commit(), "by": "scripts/base_settings.py",
         "what": "each file's metadata gained its run settings (world, data, sample, schedule), rebuilt from its stage "
                 "config and the recipe; the tensors are unchanged, so sha256 and bytes changed and nothing else"})
    prov_path.write_text(json.dumps(prov, indent=1))


if __name__ == "__main__":
    main()
