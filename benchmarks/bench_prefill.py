"""Image prefills per image in extract: one shared prefill vs the two-prefill path, side by side in one run (CPU).

    .venv/bin/python benchmarks/bench_prefill.py [--images 8] [--batch 8] [--instances 3]
        [--text-layers 4] [--max-new-tokens 16] [--reps 2] [--threads N]

Model: the smoke LLaVA-OneVision (`pipeline/vlm_families`: its processor, tokenizer and tiny SigLIP
tower, so the anyres tiling is real) with the language model widened to
llava-onevision-qwen2-0.5b-ov's width (hidden 896, 14 heads, 2 KV heads, intermediate 4864,
from `../shared/reference/llava_hf/llava-onevision-qwen2-0.5b-ov-hf/config.json`) and
`--text-layers` of its 24 decoder layers; random weights, capture enabled as in the stage.
Input: `--images` random-pixel images of real photo sizes with `--instances` boxes each.

Variants, each `extract.occlusion_answers` (`--batch` images per `generate`) followed by
`extract_image` per image (sink removal on, default templates):
  after   the target prompts run on the prefix cut from the answers' KV cache (the stage's path)
  before  the answers keep no cache, so each image's target prefix is prefilled again
Prints image prefills per image (counted by `image_prefills.ImagePrefillCounter`: rows of
model forwards that embed images) and the median time per image over `--reps` runs after a
warm-up (process CPU time, robust on a shared machine with `--threads 1`; wall beside), their
ratio, and whether answers and maps are equal (they must be). Then, for every
smoke family at its smoke width, the image prefills per image of the stage's path on 2
images, with the reason where it is not 1. Random weights: speed only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

ONEVISION_05B_WIDTH = {"hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                       "num_key_value_heads": 2, "head_dim": 64}
SIZES = [(640, 480), (480, 640), (800, 600), (500, 375), (640, 427), (375, 500), (1024, 768), (600, 600)]


def _wide_onevision(text_layers: int):
    """The smoke OneVision with its language model at the 0.5B checkpoint's width."""
    from pipeline.vlm_families import build_smoke_vlm

    smoke, processor = build_smoke_vlm("llava_onevision")
    config = copy.deepcopy(smoke.config)
    text = config.text_config
    for key, value in ONEVISION_05B_WIDTH.items():
        setattr(text, key, value)
    text.num_hidden_layers = text_layers
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = text.layer_types[:1] * text_layers
    text.initializer_range = 0.02
    torch.manual_seed(0)
    model = type(smoke)._from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
    model.requires_grad_(False)
    model.generation_config = copy.deepcopy(smoke.generation_config)
    return model, processor


def _jobs(n_images: int, n_instances: int, sizes=SIZES):
    from PIL import Image

    from pipeline.attention.extract import ImageJob
    from pipeline.datasets.record import ImageRecord, Instance

    rng = np.random.default_rng(0)
    names = ["cup", "bowl", "banana", "teddy bear", "bottle"]
    jobs = []
    for i in range(n_images):
        w, h = sizes[i % len(sizes)]
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        instances = []
        for k in range(n_instances):
            bw, bh = rng.uniform(0.2, 0.5) * w, rng.uniform(0.2, 0.5) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            instances.append(Instance(100 * i + k, k, names[k % len(names)], (x, y, bw, bh), None, None, None))
        jobs.append(ImageJob(ImageRecord(i, None, w, h, tuple(instances)), image))
    return jobs


def _extract(vlm, jobs, params, layers, share: bool):
    """occlusion_answers + extract_image for `jobs`; share=False drops the answers' KV cache."""
    from pipeline.attention.extract import extract_image, occlusion_answers

    out = []
    for start in range(0, len(jobs), params.generation_batch):
        chunk = jobs[start:start + params.generation_batch]
        answers = occlusion_answers(vlm, chunk, params)
        if not share:
            answers = [dataclasses.replace(a, batch=None) for a in answers]
        out += [extract_image(vlm, job, params, layers, answer=a) for job, a in zip(chunk, answers)]
    return out


def _counted(vlm, fn):
    from pipeline.attention.image_prefills import ImagePrefillCounter

    with ImagePrefillCounter(vlm.model) as counter, torch.inference_mode():
        result = fn()
    return result, counter.count


def _same(a_images, b_images) -> bool:
    for a, b in zip(a_images, b_images):
        if a.occlusion_raw != b.occlusion_raw:
            return False
        for g in a.instances:
            if not np.allclose(a.instances[g].maps, b.instances[g].maps, rtol=1e-4, atol=1e-6):
                return False
    return True


def _not_shared_reason(vlm, job, params) -> str:
    """Why the stage's path prefills `job`'s image twice, or '' when it prefills it once."""
    from pipeline.attention.extract import occlusion_answers, occlusion_prefix
    from pipeline.attention.prefix_reuse import PrefixShareError
    from pipeline.attention.prompts import encode_prompt, target_question

    answer = occlusion_answers(vlm, [job], params)[0]
    question = target_question(params.all_templates()["target"], "cup", "[0.00, 0.00, 1.00, 1.00]")
    target = encode_prompt(vlm.processor, job.image, question, False, answer.prompt.image_inputs)
    try:
        occlusion_prefix(vlm.model, [target], answer)
    except PrefixShareError as e:
        return str(e)
    return ""


def _median_times(fn, reps: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `reps` calls of `fn` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="images per batched generate call")
    parser.add_argument("--instances", type=int, default=3, help="boxes (target prompts) per image")
    parser.add_argument("--text-layers", type=int, default=4, help="decoder layers of the 0.5B-wide model")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from pipeline.attention.capture import enable_capture
    from pipeline.attention.params import ExtractParams
    from pipeline.vlm_families import build_smoke_vlm, family_names

    params = ExtractParams(max_new_tokens=args.max_new_tokens, generation_batch=args.batch, sink_removal=True)
    model, processor = _wide_onevision(args.text_layers)
    enable_capture(model)
    vlm = SimpleNamespace(model=model, processor=processor)
    jobs = _jobs(args.images, args.instances)
    layers = [args.text_layers - 1]
    after, n_after = _counted(vlm, lambda: _extract(vlm, jobs, params, layers, share=True))
    before, n_before = _counted(vlm, lambda: _extract(vlm, jobs, params, layers, share=False))
    same = _same(after, before)
    t_after = _median_times(lambda: _counted(vlm, lambda: _extract(vlm, jobs, params, layers, True)), args.reps)
    t_before = _median_times(lambda: _counted(vlm, lambda: _extract(vlm, jobs, params, layers, False)), args.reps)
    n = len(jobs)
    tokens = [len(im.placement) for im in after]
    print(f"smoke llava_onevision, language model at 0.5B width ({args.text_layers} of 24 layers), random weights; "
          f"{n} images ({min(tokens)}-{max(tokens)} image tokens), {args.instances} boxes + sink prompt each, "
          f"{args.max_new_tokens} new tokens, {args.batch} images per generate, torch threads {torch.get_num_threads()}")
    print(f"answers and maps equal (before == after):  {same}")
    for name, count, (wall, cpu) in (("before (two prefills)", n_before, t_before), ("after  (one prefill) ", n_after, t_after)):
        print(f"{name}: image prefills per image {count / n:.2f}, per image {cpu / n * 1000:8.1f} ms CPU "
              f"({wall / n * 1000:.1f} ms wall)")
    print(f"ratio before / after, CPU time per image:   {t_before[1] / t_after[1]:8.2f} x "
          f"(wall {t_before[0] / t_after[0]:.2f} x)")
    print("every smoke family (smoke width, 2 images), the stage's path:")
    for family in family_names():
        smoke, smoke_processor = build_smoke_vlm(family)
        enable_capture(smoke)
        small = SimpleNamespace(model=smoke, processor=smoke_processor)
        family_jobs = _jobs(2, 2, sizes=[(160, 120), (200, 150)])
        _, count = _counted(small, lambda: _extract(small, family_jobs, params, [0], share=True))
        per_image = count / len(family_jobs)
        reason = "" if per_image == 1 else f"  ({_not_shared_reason(small, family_jobs[0], params)})"
        print(f"  {family:16s} image prefills per image {per_image:.2f}{reason}")
    if not same:
        raise SystemExit("the two paths give different answers or maps")


if __name__ == "__main__":
    main()
