"""Resumability of the extract stage: a real `python -m stages.extract` process killed by
SIGKILL while writing an image, then re-run, ends with the same cache as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from pipeline.synth import generate

REPO = Path(__file__).resolve().parents[1]

# Runs the real stage, but holds the process inside the write of the 2nd image's part file
# (the HDF5 temp file is open and half written) so the test can kill it there for certain.
_PAUSING_RUNNER = textwrap.dedent("""
    import sys, time
    import pipeline.attention.cache as cache
    original = cache._write_image
    written = []
    def pausing_write(parent, image):
        original(parent, image)
        written.append(image.image_id)
        if len(written) == 2:
            parent.file.flush()
            print("PAUSED", flush=True)
            time.sleep(600)
    cache._write_image = pausing_write
    from stages.extract import main
    main(sys.argv[1:])
""")


def _tree(path: Path) -> dict:
    """Every attribute and dataset of an HDF5 file, keyed by object path."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        for k, v in f.attrs.items():
            out[f"/@{k}"] = v
        f.visititems(visit)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        va, vb = np.asarray(a[key]), np.asarray(b[key])
        if va.dtype.kind == "f":
            np.testing.assert_allclose(va, vb, rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(va, vb, err_msg=key)


def test_killed_run_resumes_to_the_same_cache(tmp_path):
    ann = generate(tmp_path / "synth", 3, seed=2, width=160, height=120, mean_instances=2.0,
                   max_instances=2, progress=False)
    params = {
        "dataset": {"annotations": str(ann), "flavour": "d2sa"},
        "models": {"profile": "smoke", "vlm": {"family": "llava_next"}},
        "extract": {"layers": [0, -1], "max_new_tokens": 3},
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "attention.h5"
    parts = tmp_path / "attention.h5.parts"
    args = ["--params", str(params_file), "--out", str(out)]

    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_RUNNER, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "PAUSED", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # one finished part, one half-written temp file, no cache
    assert [p.name for p in parts.glob("*.h5")] == ["1.h5"]
    assert any(p.name.endswith(".tmp") for p in parts.iterdir())
    assert not out.exists()

    resumed = subprocess.run([sys.executable, "-m", "stages.extract", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 of 3 images already extracted" in resumed.stderr
    assert "SMOKE run: random weights" in resumed.stderr
    assert not parts.exists()

    # reference: an uninterrupted run of the same stage (in this process)
    from stages.extract import run_stage

    reference = run_stage(params_file, tmp_path / "reference.h5", progress=False)
    got, want = _tree(out), _tree(reference)
    assert any(k.endswith("/maps") for k in want) and len([k for k in want if k.endswith("/maps")]) >= 3
    _assert_same(got, want)
