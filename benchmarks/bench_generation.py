"""Occlusion answers: batched generation vs one image at a time, side by side in one run (CPU).

    .venv/bin/python benchmarks/bench_generation.py [--family llava_next] [--images 8] [--batch 8]
        [--max-new-tokens 32] [--reps 3] [--threads N]

Model: the smoke VLM of `--family` (tiny random weights, `pipeline.vlm_families`), capture enabled as
in the extract stage. Input: the occlusion prompts of `--images` random-pixel images of
different sizes (so the batch is left-padded and, for the anyres families, the patch counts
differ). Variants: `generate_answers` on one prompt at a time, and on `--batch` prompts per call.
Prints whether the answers are equal (they must be) and the median time per image of each
variant over `--reps` runs after one warm-up, and their ratio. Random weights: the answers are
not JSON, so every row runs to --max-new-tokens (no early stop): the timing is of full-length
decoding. Speed only; on a GPU `benchmarks/gpu_check.py` measures the 7B model.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from timing import median_time  # benchmarks/timing.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava_next", choices=("llava", "llava_next", "llava_onevision"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="prompts per batched generate call")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from PIL import Image

    from pipeline.attention.capture import enable_capture
    from pipeline.attention.generation import generate_answers
    from pipeline.attention.params import DEFAULT_TEMPLATES
    from pipeline.attention.prompts import encode_prompt, occlusion_question
    from pipeline.vlm_families import build_smoke_vlm

    model, processor = build_smoke_vlm(args.family)
    enable_capture(model)
    tokenizer = processor.tokenizer
    rng = np.random.default_rng(0)
    sizes = [(160, 120), (400, 100), (120, 120), (100, 300)]
    prompts = []
    for i in range(args.images):
        w, h = sizes[i % len(sizes)]
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        question = occlusion_question(DEFAULT_TEMPLATES["occlusion"], ["kiwi", "pear", "apple"][: i % 3 + 1])
        prompts.append(encode_prompt(processor, image, question))
    n = args.max_new_tokens

    def single():
        return [generate_answers(model, tokenizer, [p], n)[0] for p in prompts]

    def batched():
        out = []
        for start in range(0, len(prompts), args.batch):
            out += generate_answers(model, tokenizer, prompts[start:start + args.batch], n)
        return out

    same = single() == batched()
    t_single = median_time(single, args.reps) / len(prompts)
    t_batched = median_time(batched, args.reps) / len(prompts)
    lengths = [len(p.input_ids) for p in prompts]
    print(f"smoke {args.family} (random weights), {len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"{n} new tokens, torch threads {torch.get_num_threads()}")
    print(f"answers batched == one at a time:       {same}")
    print(f"one at a time, per image:               {t_single * 1000:8.1f} ms")
    print(f"batched ({args.batch} per call), per image:      {t_batched * 1000:8.1f} ms")
    print(f"ratio one at a time / batched:          {t_single / t_batched:8.2f} x")
    if not same:
        raise SystemExit("batched answers differ from one-at-a-time answers")


if __name__ == "__main__":
    main()
