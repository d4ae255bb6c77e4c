"""Cost of attention capture and of prefix (KV-cache) reuse at LLaVA-NeXT-Mistral-7B width.

    .venv/bin/python benchmarks/bench_capture.py [--image-tokens 2300] [--prefix-text 25]
        [--suffix-tokens 15] [--layers 2] [--repeats 3] [--instances 4] [--threads 1]
        [--dtype float32]

Model: the language model alone (`MistralForCausalLM`; the vision tower is skipped, image
tokens are stand-in token ids) with Mistral-7B's width (hidden 4096, 32 heads, 8 KV heads,
intermediate 14336), `--layers` decoder layers, a small vocabulary, random weights, CPU.
Input: one prompt of image tokens + prefix text + one instance's suffix (~2,340 tokens).

Variants, each in a fresh subprocess (same weights, same input):
  plain    SDPA forward (what the pipeline would run without capture)
  capture  `capture.py`: 5 target rows captured in every layer
  eager    eager attention with `output_attentions=True` (the naive way)
  timing   plain and capture alternately, `--repeats` times each, in one process
  reuse    `prefix_reuse.py`: prefill + instance 1 (first), then instances 2..K (suffix only)

Peak memory: after building the model the worker resets the kernel's peak-RSS counter
(`echo 5 > /proc/self/clear_refs`) and reads `VmHWM - VmRSS` (from /proc/self/status) after
the measured call: the extra resident memory the call needed at its peak, weights excluded
(one call per fresh process).
Time: workers run torch with `--threads` threads (default 1) and record wall and CPU time of
the process; on a shared machine single-thread CPU time is the load-robust measure, so the
ratios use it (wall times are printed beside). Plain vs capture come from the `timing`
worker, which alternates them; each figure is the minimum over `--repeats`.
Targets: capture <= 1.05x memory and <= 1.10x time of plain; each later instance <= 10% of
the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CAPTURE_ROWS = 5
MEMORY_TARGET = 1.05
TIME_TARGET = 1.10
LATER_TARGET = 0.10


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-tokens", type=int, default=2300, help="image tokens in the prefix")
    p.add_argument("--prefix-text", type=int, default=25, help="text tokens in the prefix after the image")
    p.add_argument("--suffix-tokens", type=int, default=15, help="tokens of one instance's suffix")
    p.add_argument("--layers", type=int, default=2, help="decoder layers")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of plain/capture (interleaved) and of the reuse sequence; minimum reported")
    p.add_argument("--instances", type=int, default=4, help="instances K for the prefix-reuse variant")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (1: CPU time is then a load-robust measure)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights dtype")
    p.add_argument("--worker", choices=["plain", "capture", "eager", "timing", "reuse"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------- worker (subprocess)

def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


class PeakMemory:
    """Extra resident memory (MiB) at the peak of a block, relative to its start."""

    def __enter__(self):
        import gc

        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.start = _proc_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mib = (_proc_kib("VmHWM") - self.start) / 1024


def _build(args, attn_implementation: str):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=1024, hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
        sliding_window=None,
    )
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = MistralForCausalLM._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    model.eval().requires_grad_(False)
    n_prefix = args.image_tokens + args.prefix_text
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, 1024, (1, n_prefix), generator=gen)
    suffixes = [torch.randint(0, 1024, (1, args.suffix_tokens), generator=gen) for _ in range(args.instances)]
    return model, prefix, suffixes


def _measured(fn):
    """(result, peak extra MiB, wall seconds, CPU seconds of this process) of one call of `fn`."""
    with PeakMemory() as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, mem.peak_mib, wall, cpu


def _plain_call(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids, logits_to_keep=1).logits


def _capture_call(model, ids, layers, rows):
    import torch

    from pipeline.attention.capture import capture_rows

    with capture_rows(model, layers, rows) as rec, torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)
    return rec.result


def _worker(args) -> dict:
    import torch

    from pipeline.attention.capture import disable_capture, enable_capture
    from pipeline.attention.prefix_reuse import prefill, run_suffix

    variant = args.worker
    torch.set_num_threads(args.threads)
    model, prefix, suffixes = _build(args, "eager" if variant == "eager" else "sdpa")
    ids = torch.cat([prefix, suffixes[0]], dim=1)
    n = ids.shape[1]
    rows = list(range(n - args.suffix_tokens + 2, n - args.suffix_tokens + 2 + CAPTURE_ROWS))
    layers = list(range(args.layers))
    out = {"variant": variant, "tokens": n}

    if variant == "timing":
        # plain and capture alternate in one process, so load changes hit both alike
        plain_times, capture_times = [], []
        for _ in range(args.repeats):
            disable_capture(model)
            plain_times.append(_measured(lambda: _plain_call(model, ids))[2:])
            enable_capture(model)
            capture_times.append(_measured(lambda: _capture_call(model, ids, layers, rows))[2:])
        out["plain_wall"], out["plain_cpu"] = (min(t) for t in zip(*plain_times))
        out["capture_wall"], out["capture_cpu"] = (min(t) for t in zip(*capture_times))
    elif variant == "plain":
        _, out["peak_mib"], out["seconds"], _ = _measured(lambda: _plain_call(model, ids))
    elif variant == "capture":
        enable_capture(model)
        maps, out["peak_mib"], out["seconds"], _ = _measured(lambda: _capture_call(model, ids, layers, rows))
        out["captured_shape"] = list(maps[0].shape)
    elif variant == "eager":
        def call():
            with torch.no_grad():
                o = model(input_ids=ids, logits_to_keep=1, output_attentions=True)
            return [a[:, :, rows] for a in o.attentions]
        maps, out["peak_mib"], out["seconds"], _ = _measured(call)
        out["captured_shape"] = list(maps[0].shape)
    else:  # reuse
        enable_capture(model)
        prefix_len = prefix.shape[1]
        target = list(range(2, 2 + CAPTURE_ROWS))
        firsts, laters = [], []  # (wall, cpu) per repeat
        for repeat in range(args.repeats):
            state, prefill_mib, *prefill_t = _measured(lambda: prefill(model, {"input_ids": ids}, prefix_len))
            _, suffix_mib, *first_t = _measured(lambda: run_suffix(model, state, suffixes[0], target, layers))
            later_t = [_measured(lambda: run_suffix(model, state, s, target, layers))[2:] for s in suffixes[1:]]
            firsts.append([p + f for p, f in zip(prefill_t, first_t)])
            laters.append([sum(col) / len(col) for col in zip(*later_t)])
            if repeat == 0:
                out["prefill_peak_mib"], out["suffix_peak_mib"] = prefill_mib, suffix_mib
            del state
        out["first_wall"], out["first_cpu"] = (min(t) for t in zip(*firsts))
        out["later_wall"], out["later_cpu"] = (min(t) for t in zip(*laters))
    return out


# ----------------------------------------------------------------- driver

def _run_worker(variant: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    import torch

    n = args.image_tokens + args.prefix_text + args.suffix_tokens
    print(f"Mistral-7B width, {args.layers} layers, {n} tokens, {args.dtype}, CPU "
          f"({args.threads} thread(s) per worker, load average {os.getloadavg()[0]:.1f}); "
          "language model alone (vision tower skipped)")
    results = {}
    for variant in ("plain", "capture", "eager", "timing", "reuse"):
        results[variant] = _run_worker(variant, argv)
        print(f"  measured {variant}: {results[variant]}", flush=True)
    plain, cap, eager, timing, reuse = (results[v] for v in ("plain", "capture", "eager", "timing", "reuse"))
    mem_ratio = cap["peak_mib"] / plain["peak_mib"]
    cpu_ratio = timing["capture_cpu"] / timing["plain_cpu"]
    wall_ratio = timing["capture_wall"] / timing["plain_wall"]
    later_cpu = reuse["later_cpu"] / reuse["first_cpu"]
    later_wall = reuse["later_wall"] / reuse["first_wall"]

    def verdict(ratio, target):
        return f"{ratio:.3f}x (target <= {target}) {'ok' if ratio <= target else 'MISSED'}"

    print(f"\n{'variant':<9}{'peak MiB':>9}{'wall s':>9}   interleaved min: {'wall s':>7}{'CPU s':>8}")
    for name, r in (("plain", plain), ("capture", cap), ("eager", eager)):
        inter = (f"{timing[name + '_wall']:>7.2f}{timing[name + '_cpu']:>8.2f}"
                 if name != "eager" else f"{'-':>7}{'-':>8}")
        print(f"{name:<9}{r['peak_mib']:>9.0f}{r['seconds']:>9.2f}   {'':16} {inter}")
    print(f"\ncapture / plain: memory {verdict(mem_ratio, MEMORY_TARGET)}; "
          f"CPU time {verdict(cpu_ratio, TIME_TARGET)}; wall time {wall_ratio:.3f}x")
    print(f"eager   / plain: memory {eager['peak_mib'] / plain['peak_mib']:.2f}x, "
          f"wall time {eager['seconds'] / plain['seconds']:.2f}x")
    print(f"prefix reuse: first instance (prefill + suffix) {reuse['first_cpu']:.2f} CPU s "
          f"({reuse['first_wall']:.2f} wall s), later instance {reuse['later_cpu']:.3f} CPU s "
          f"({reuse['later_wall']:.3f} wall s): later / first CPU {verdict(later_cpu, LATER_TARGET)}, "
          f"wall {later_wall:.3f}x; extra peak MiB: prefill {reuse['prefill_peak_mib']:.0f}, "
          f"suffix {reuse['suffix_peak_mib']:.0f}")


if __name__ == "__main__":
    main()
