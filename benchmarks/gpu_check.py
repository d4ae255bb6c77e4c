"""One command that measures the pipeline on a CUDA GPU, with random weights at the real sizes.

    python benchmarks/gpu_check.py [--out reports/gpu_check.json] [--images 20] [--budget-s 480]
    python benchmarks/gpu_check.py --tiny      # the same code with smoke-size models (CPU dry run)

Models (random weights, nothing downloaded): LLaVA-NeXT-Mistral-7B built in bf16 directly on
the GPU from `../shared/reference/llava_hf/llava-v1.6-mistral-7b-hf` (config.json and the real
processor files; no CPU-side fp32 copy of the 7B weights), EfficientSAM ViT-T and ViT-S
(seeded random weights), SAM 2.1 Hiera-L (facebook/sam2.1-hiera-large's architecture, seeded
random weights; `--tiny`: the smoke SAM 2). Data: `--images` synthetic 640x480 scenes (`pipeline/synth`).

Measured, in this order (each part is skipped, and says so, once `--budget-s` is spent):
  stages      extract -> sample -> decode (ViT-T; ViT-S decode as well) -> evaluate through the
              stage functions: images/s per stage, and the projected time of each stage on
              D2SA val (3,600 images; at the synthetic scenes' instances per image)
  capture     one full forward of a target prompt of ~2,900 tokens (a 672x672 image): plain
              SDPA vs SDPA + capture of the query rows in the extract layers (time, peak memory)
  reuse       prefix reuse on one image: later instance (suffix only) / first (prefill + suffix)
  decode      EfficientSAM `decode_image` of 16 vs 1 instances per image
  sam2        SAM 2.1-L through the segmenter interface: embed one image once, then decode 16 vs 1
              queries (2 positive + 2 negative points each) over that embedding
  generation  occlusion answers per image: batched (extract.generation_batch per call) vs one
              at a time, and whether the answers are equal
Peak GPU memory (after construction and overall). Every figure printed and written to the JSON
is labelled random-weight timing: random weights never write JSON, so every occlusion answer
runs to max_new_tokens (the worst case), and the maps and metrics mean nothing.

Without CUDA (and without --tiny) it prints one "no CUDA" line and exits 0. `--tiny` runs the
same measurements with the smoke LLaVA-NeXT and ViT-T on small images (CI runs it on CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REFERENCE = REPO.parent / "shared" / "reference" / "llava_hf" / "llava-v1.6-mistral-7b-hf"
LABEL = "random-weight timing"
D2SA_VAL_IMAGES = 3600
CAPTURE_ROWS = 5
REUSE_INSTANCES = 8
NO_CUDA_LINE = ("no CUDA: gpu_check measures a CUDA GPU and this machine has none; nothing measured "
                "(`--tiny` runs the same code with smoke-size models on CPU)")


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("reports/gpu_check.json"), help="JSON file to write")
    p.add_argument("--images", type=int, default=None, help="synthetic images (default 20; --tiny 2)")
    p.add_argument("--gen-images", type=int, default=None,
                   help="images whose occlusion answers are timed batched and one at a time (default 8; --tiny 2)")
    p.add_argument("--generation-batch", type=int, default=8, help="extract.generation_batch")
    p.add_argument("--max-new-tokens", type=int, default=None, help="occlusion answer budget (default 256; --tiny 4)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget, construction included")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the micro measurements (median)")
    p.add_argument("--tiny", action="store_true", help="smoke-size models and small images (CPU dry run)")
    args = p.parse_args(argv)
    defaults = {"images": (20, 2), "gen_images": (8, 2), "max_new_tokens": (256, 4)}
    for name, (real, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else real)
    return args


class Report:
    """Figures, each labelled random-weight timing, printed as they come and written as JSON."""

    def __init__(self, args, device: str):
        self.started = time.perf_counter()
        self.budget_s = args.budget_s
        self.data = {
            "label": f"{LABEL.upper()}: random weights at the real sizes; speed and memory only, no quality",
            "profile": "tiny (smoke-size models)" if args.tiny else "real sizes",
            "device": device, "figures": {}, "skipped": [], "info": {},
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def figure(self, name: str, value, unit: str) -> None:
        value = None if value is None else round(float(value), 6)
        self.data["figures"][name] = {"value": value, "unit": unit, "label": LABEL}
        shown = "n/a" if value is None else f"{value:.4g}"
        print(f"[{LABEL}] {name}: {shown} {unit}", flush=True)

    def info(self, name: str, value) -> None:
        self.data["info"][name] = value

    def part(self, name: str, fn) -> None:
        """Run one measurement unless the budget is spent."""
        if self.elapsed() > self.budget_s:
            self.data["skipped"].append(f"{name}: budget of {self.budget_s:.0f} s spent")
            print(f"skipped {name}: budget of {self.budget_s:.0f} s spent", flush=True)
            return
        fn()

    def write(self, path: Path) -> None:
        from pipeline.atomic import write_json

        self.data["info"]["wall_s"] = round(self.elapsed(), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.data)
        print(f"wrote {path} ({LABEL})")


# ---------------------------------------------------------------- device helpers

def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _median(fn, device: str, reps: int) -> float:
    fn()  # warm-up
    return statistics.median(_timed(fn, device) for _ in range(reps))


def _peak_extra_mib(fn, device: str):
    """Peak GPU memory above what was allocated before `fn` (MiB); None off CUDA."""
    import torch

    if not device.startswith("cuda"):
        fn()
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _gpu_mib(device: str):
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


# ---------------------------------------------------------------- models

def build_vlm(tiny: bool, device: str):
    """LoadedVlm of random weights: LLaVA-NeXT-Mistral-7B in bf16 built on `device`, or the smoke one."""
    import torch
    import transformers as tf

    from pipeline.attention.vlm import LoadedVlm

    if tiny:
        from pipeline.vlm_families import build_smoke_vlm

        model, processor = build_smoke_vlm("llava_next")
        model.to(device)
        return LoadedVlm(model, processor, "llava_next", "smoke/llava_next", "random-weights", True)
    if not (REFERENCE / "config.json").exists():
        raise SystemExit(f"{REFERENCE}/config.json is missing: the check builds the 7B model from it")
    config = tf.LlavaNextConfig.from_pretrained(REFERENCE)
    processor = tf.LlavaNextProcessor.from_pretrained(REFERENCE, backend="pil")
    with torch.device(device):  # weights are created (and initialised) on the GPU, in bf16
        model = tf.LlavaNextForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    tokenizer = processor.tokenizer
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    return LoadedVlm(model, processor, "llava_next", f"random/{REFERENCE.name}", "random-weights", True)


def build_sam(variant: str, device: str):
    """The EfficientSAM `variant` segmenter with seeded random weights on `device`, through the
    segmenter registry (`pipeline.segmenters`)."""
    from pipeline.decoding.params import SamModelParams
    from pipeline.segmenters import LoadRequest, load_segmenter

    return load_segmenter(LoadRequest("efficient_sam", profile="smoke", device=device, options=SamModelParams(variant)))


# ---------------------------------------------------------------- measurements

def measure_stages(rep: Report, vlm, sams: dict, dataset, extract_params, device: str, work: Path) -> None:
    """extract -> sample -> decode -> evaluate through the stage functions; images/s and projections."""
    import dataclasses

    from pipeline.attention.extract import run_extract
    from pipeline.decoding.params import DecodeParams, SamModelParams
    from pipeline.decoding.run import run_decode
    from pipeline.evaluation.run import evaluate
    from pipeline.evaluation.run_info import undescribed_run
    from pipeline.sampling.params import SampleParams
    from pipeline.sampling.run import run_sample

    n = len(dataset.images)
    warm = dataclasses.replace(dataset, images=dataset.images[:1])
    run_extract(vlm, warm, extract_params, work / "warm.h5", progress=False)  # kernels, allocator
    cache, points = work / "attention.h5", work / "points.parquet"
    seconds = {
        "extract": _timed(lambda: run_extract(vlm, dataset, extract_params, cache, progress=False), device),
        "sample": _timed(lambda: run_sample(cache, dataset, points, SampleParams(), progress=False), device),
    }
    for variant, sam in sams.items():
        params = DecodeParams(device=device)
        visible, amodal = work / f"visible_{variant}.json", work / f"amodal_{variant}.json"
        seconds[f"decode_{variant}"] = _timed(lambda: run_decode(
            dataset, params, "smoke", SamModelParams(variant), points, cache, visible, amodal, models=sam), device)
    first = next(iter(sams))
    seconds["evaluate"] = _timed(lambda: evaluate(
        dataset, work / f"amodal_{first}.json", work / f"visible_{first}.json", work / "reports",
        run=undescribed_run("gpu_check timing run on random weights")), device)
    rep.info("instances_per_image", round(dataset.instance_count() / n, 2))
    for stage, s in seconds.items():
        rep.figure(f"stage {stage}: images/s", n / s, "images/s")
    for stage, s in seconds.items():
        rep.figure(f"stage {stage}: projected on D2SA val ({D2SA_VAL_IMAGES} images)",
                   s / n * D2SA_VAL_IMAGES / 60, "min")


def _square_image(side: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def measure_capture(rep: Report, vlm, layers: list[int], side: int, device: str, reps: int) -> None:
    """Full forward of one target prompt: plain SDPA vs SDPA + row capture (time, memory)."""
    import torch

    from pipeline.attention.capture import capture_rows, disable_capture, enable_capture
    from pipeline.attention.extract import _to_model
    from pipeline.attention.prompts import box_text, encode_prompt, target_question

    model = vlm.model
    prompt = encode_prompt(vlm.processor, _square_image(side), target_question(
        "Look at the box {box}. Where is the {phrase}?", "coca cola bottle", box_text((10, 10, 50, 80), side, side)))
    inputs = _to_model(prompt.model_inputs, model)
    rows = (list(prompt.query_rows) + [len(prompt.input_ids) - 1] * CAPTURE_ROWS)[:CAPTURE_ROWS]
    rep.info("capture_prompt_tokens", int(len(prompt.input_ids)))

    def plain():
        with torch.inference_mode():
            model(**inputs, use_cache=False, logits_to_keep=1)

    def captured():
        with capture_rows(model, layers, rows), torch.inference_mode():
            model(**inputs, use_cache=False, logits_to_keep=1)

    disable_capture(model)
    t_plain = _median(plain, device, reps)
    m_plain = _peak_extra_mib(plain, device)
    enable_capture(model)
    t_capture = _median(captured, device, reps)
    m_capture = _peak_extra_mib(captured, device)
    rep.figure(f"capture: plain SDPA forward ({len(prompt.input_ids)} tokens)", t_plain * 1000, "ms")
    rep.figure(f"capture: SDPA + capture forward ({len(rows)} rows, {len(layers)} layers)", t_capture * 1000, "ms")
    rep.figure("capture: time capture / plain", t_capture / t_plain, "x")
    rep.figure("capture: peak extra memory, plain", m_plain, "MiB")
    rep.figure("capture: peak extra memory, capture", m_capture, "MiB")
    rep.figure("capture: memory capture / plain", None if m_plain is None else m_capture / m_plain, "x")


def measure_reuse(rep: Report, vlm, layers: list[int], record, image, device: str) -> None:
    """Prefix reuse on one image: first instance (prefill + suffix) vs later ones (suffix only)."""
    import torch

    from pipeline.attention.capture import enable_capture
    from pipeline.attention.extract import PrefixReuseRunner, shared_prefix_length
    from pipeline.attention.prompts import box_text, encode_prompt, target_question

    enable_capture(vlm.model)
    boxes = [(20 + 30 * i, 15 + 20 * i, 120, 90) for i in range(REUSE_INSTANCES)]
    phrases = ["kiwi", "coca cola bottle", "pear", "apple", "dr oetker vitalis", "banana", "lemon", "cup"]
    prompts, image_inputs = [], None
    for box, phrase in zip(boxes, phrases):
        p = encode_prompt(vlm.processor, image, target_question(
            "Look at the box {box}. Where is the {phrase}?", phrase, box_text(box, record.width, record.height)),
            image_inputs=image_inputs)
        image_inputs = p.image_inputs
        prompts.append(p)
    prefix = shared_prefix_length(prompts)
    tok = vlm.processor.tokenizer

    def sequence():
        times, holder = [], {}

        def first():
            holder["runner"] = PrefixReuseRunner(vlm.model, tok, layers, prompts[0], prefix)
            holder["runner"].rows(prompts[0], prompts[0].query_rows)

        times.append(_timed(first, device))
        for p in prompts[1:]:
            times.append(_timed(lambda: holder["runner"].rows(p, p.query_rows), device))
        return times

    with torch.inference_mode():
        sequence()  # warm-up
        times = sequence()
    later = statistics.mean(times[1:])
    rep.figure("reuse: first instance (prefill + suffix)", times[0] * 1000, "ms")
    rep.figure("reuse: later instance (suffix only), mean", later * 1000, "ms")
    rep.figure("reuse: later instance / first", later / times[0], "x")


def measure_decode(rep: Report, sams: dict, record, device: str, reps: int) -> None:
    """Segmenter decode_image with 16 vs 1 instances on one image (encoder included)."""
    import numpy as np

    from pipeline.decoding.prompts import ImagePrompts
    from pipeline.decoding.sam import decode_image, load_image

    tensor = load_image(record.path, record.width, record.height, record.id)
    rng = np.random.default_rng(0)

    def prompts(q):
        pts = np.stack([rng.uniform(0, record.width, (q, 4)), rng.uniform(0, record.height, (q, 4))], -1)
        return ImagePrompts(pts.astype(np.float32), np.tile(np.array([1, 1, 0, 0]), (q, 1)), ("",) * q)

    for variant, sam in sams.items():
        p1, p16 = prompts(1), prompts(16)
        t1 = _median(lambda: decode_image(sam, tensor, p1), device, reps)
        t16 = _median(lambda: decode_image(sam, tensor, p16), device, reps)
        rep.figure(f"decode {variant}: 1 instance per image", t1 * 1000, "ms")
        rep.figure(f"decode {variant}: 16 instances per image", t16 * 1000, "ms")
        rep.figure(f"decode {variant}: 16 / 1 instances", t16 / t1, "x")


def build_sam2(tiny: bool, device: str):
    """SAM 2.1 Hiera-L at its real widths with seeded random weights on `device`; `tiny`: the
    smoke SAM 2 of the registry."""
    from pipeline.segmenters import LoadRequest, get_family, load_segmenter

    if tiny:
        return load_segmenter(LoadRequest("sam2", profile="smoke", device=device))
    family = get_family("sam2")
    return family.seeded_real_width(family.real_width_variants[0], device)


def measure_sam2(rep: Report, tiny: bool, record, image, device: str, reps: int) -> None:
    """SAM 2.1-L: construction, one image embedding, and 16 vs 1 queries decoded over it."""
    import numpy as np

    from pipeline.segmenters import PromptQueries

    t = time.perf_counter()
    seg = build_sam2(tiny, device)
    _sync(device)
    rep.info("sam2_model", seg.provenance["id"] or "smoke")
    rep.figure("construction: SAM 2.1-L", time.perf_counter() - t, "s")
    rgb = np.asarray(image.convert("RGB"))
    rng = np.random.default_rng(0)

    def queries(q):
        pts = np.stack([rng.uniform(0, record.width, (q, 4)), rng.uniform(0, record.height, (q, 4))], -1)
        return PromptQueries(pts.astype(np.float32), np.tile(np.array([1, 1, 0, 0]), (q, 1)))

    seg.embed(rgb)  # warm-up
    t_embed = _median(lambda: seg.embed(rgb), device, reps)
    emb = seg.embed(rgb)
    q1, q16 = queries(1), queries(16)
    t1 = _median(lambda: seg.decode(emb, q1), device, reps)
    t16 = _median(lambda: seg.decode(emb, q16, max_queries_per_call=16), device, reps)
    rep.figure("sam2: embed one image", t_embed * 1000, "ms")
    rep.figure("sam2: decode 1 query", t1 * 1000, "ms")
    rep.figure("sam2: decode 16 queries", t16 * 1000, "ms")
    rep.figure("sam2: decode 16 / 1 queries", t16 / t1, "x")
    rep.figure("sam2: embed + decode 16 queries", (t_embed + t16) * 1000, "ms")


def measure_generation(rep: Report, vlm, jobs, params, device: str) -> None:
    """Occlusion answers per image: batched (params.generation_batch per call) vs one at a time."""
    from pipeline.attention.capture import enable_capture
    from pipeline.attention.extract import occlusion_prompt
    from pipeline.attention.generation import generate_answers

    enable_capture(vlm.model)
    prompts = [p for p in (occlusion_prompt(vlm.processor, job, params) for job in jobs) if p is not None]
    tok, n, b = vlm.processor.tokenizer, params.max_new_tokens, params.generation_batch
    batched, single = [], []
    t_batched = _timed(lambda: [batched.extend(generate_answers(vlm.model, tok, prompts[i:i + b], n))
                                for i in range(0, len(prompts), b)], device)
    t_single = _timed(lambda: [single.extend(generate_answers(vlm.model, tok, [p], n)) for p in prompts], device)
    rep.info("generation_images", len(prompts))
    rep.info("generation_answers_equal", batched == single)
    rep.info("generation_answer_tokens", [len(tok(a, add_special_tokens=False)["input_ids"]) for a in single])
    rep.figure(f"generation: batched ({b} per call), per image", t_batched / len(prompts) * 1000, "ms")
    rep.figure("generation: one at a time, per image", t_single / len(prompts) * 1000, "ms")
    rep.figure("generation: one at a time / batched", t_single / t_batched, "x")
    rep.figure(f"generation: batched, projected on D2SA val ({D2SA_VAL_IMAGES} images)",
               t_batched / len(prompts) * D2SA_VAL_IMAGES / 60, "min")


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    args = _parse(argv)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(NO_CUDA_LINE)
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rep = Report(args, device)
    print(f"gpu_check on {device} ({rep.data['profile']}); every figure is {LABEL}", flush=True)
    if device == "cuda":
        rep.info("gpu", torch.cuda.get_device_name())
    rep.info("torch", torch.__version__)

    from pipeline.attention.extract import ImageJob, load_image
    from pipeline.attention.params import ExtractParams, resolve_layers
    from pipeline.datasets import load_dataset
    from pipeline.synth import generate

    t = time.perf_counter()
    vlm = build_vlm(args.tiny, device)
    _sync(device)
    rep.figure("construction: VLM", time.perf_counter() - t, "s")
    t = time.perf_counter()
    sams = {v: build_sam(v, device) for v in (("vitt",) if args.tiny else ("vitt", "vits"))}
    _sync(device)
    rep.figure("construction: EfficientSAM " + " + ".join(sams), time.perf_counter() - t, "s")
    rep.figure("memory: GPU after construction", _gpu_mib(device), "MiB")

    n_layers = vlm.model.config.get_text_config().num_hidden_layers
    params = ExtractParams(layers=[0, -1] if args.tiny else [-16, -12, -8], max_new_tokens=args.max_new_tokens,
                           generation_batch=args.generation_batch)
    layers = resolve_layers(params.layers, n_layers)
    width, height, side = (160, 120, 120) if args.tiny else (640, 480, 672)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = load_dataset(generate(work / "synth", args.images, seed=0, width=width, height=height,
                                        progress=False))
        record = next(im for im in dataset.images if im.instances)
        image = load_image(record)
        rep.part("stages", lambda: measure_stages(rep, vlm, sams, dataset, params, device, work))
        rep.part("capture", lambda: measure_capture(rep, vlm, layers, side, device, args.reps))
        rep.part("reuse", lambda: measure_reuse(rep, vlm, layers, record, image, device))
        rep.part("decode", lambda: measure_decode(rep, sams, record, device, args.reps))
        rep.part("sam2", lambda: measure_sam2(rep, args.tiny, record, image, device, args.reps))
        jobs = [ImageJob(r, load_image(r)) for r in dataset.images[: args.gen_images]]
        rep.part("generation", lambda: measure_generation(rep, vlm, jobs, params, device))
    rep.figure("memory: GPU peak overall", _gpu_mib(device), "MiB")
    rep.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
