"""The installed transformers lies in the range pyproject.toml declares (the releases the suite
has passed on), and prefix reuse uses no argument that release deprecates."""

import tomllib
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
from packaging.requirements import Requirement

from pipeline.attention.prefix_reuse import prefill, run_suffix
from pipeline.vlm_families import build_smoke_vlm

REPO = Path(__file__).resolve().parents[1]


def test_installed_transformers_is_in_the_declared_range():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "transformers"]
    assert version("transformers") in req.specifier, (version("transformers"), str(req))
    assert "<" in str(req.specifier)  # an upper bound: a later release must be tried first


def test_prefix_reuse_calls_raise_no_deprecation():
    model, processor = build_smoke_vlm("llava_next")
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        state = prefill(model, {"input_ids": ids[:, :4], "attention_mask": torch.ones(1, 4, dtype=torch.long)}, 4)
        rows = run_suffix(model, state, ids[:, 4:], [0, 1], [0])
    assert rows[0].shape[1] == 2
