"""A built wheel works on its own: installed into a fresh virtual environment (its dependencies from this
environment's site-packages, nothing downloaded), `mirai demo --quick` runs from another folder, finding its
configs inside the package, and the shipped base is inside it too."""

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_quick_demo_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("mirai-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import mirai, mirai.demo.plan as p; print(mirai.__file__); "
                            "print(p.shipped_base())"], capture_output=True, text=True, check=True, cwd=elsewhere)
    package, base = where.stdout.split()
    assert package.startswith(str(env)) and Path(base, "ode.safetensors").is_file()  # not the checkout's src/
    done = subprocess.run([str(env / "bin" / "mirai"), "demo", "--quick", "--out", "demo", "--set", "demo.samples=2",
                           "--set", "demo.sampling_seeds=[0]", "--set", "demo.device=cpu"],
                          capture_output=True, text=True, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((elsewhere / "demo" / "results.json").read_text())
    assert set(results["arms"]) == {"baseline", "foresight"} and "verdict:" in done.stdout
