"""Where the pipeline finds its checkpoints, whether they are there, and where to get them.

EfficientSAM (`efficient_sam_vitt.pt`, `efficient_sam_vits.pt`) is searched in this order:
  1. the explicit path from params (`models.efficient_sam.checkpoint`: a file, or a folder holding it)
     — when given, it must exist: no fall-through to the other places;
  2. `$VLMSAM_WEIGHTS_DIR`;
  3. `weights/` in the project (beside the `pipeline` package);
  4. `~/.cache/vlmsam/`.
In each folder the official `.pt` name is tried, then the same stem with `.safetensors`.
A missing checkpoint is a `MissingWeightsError` saying what to download and where to put it;
a real run never falls back to random weights.

The optional amodal decoder is a user-supplied mask-decoder state dict (no public download).
The VLMs are read from the Hugging Face hub cache (no network: `try_to_load_from_cache`) or from a
local folder; "present" means config.json AND the weight files it needs are there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from pipeline.errors import VlmsamError

WEIGHTS_DIR_ENV = "VLMSAM_WEIGHTS_DIR"
PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
EFFICIENT_SAM_REPO = "https://github.com/yformer/EfficientSAM"
# Official download of each variant (from the repository's weights/ folder; ViT-S is shipped zipped).
EFFICIENT_SAM_DOWNLOADS = {
    "vitt": f"{EFFICIENT_SAM_REPO}/raw/main/weights/efficient_sam_vitt.pt",
    "vits": f"{EFFICIENT_SAM_REPO}/raw/main/weights/efficient_sam_vits.pt.zip",
}
SAM_PARAM = "models.efficient_sam.checkpoint"
AMODAL_PARAM = "models.efficient_sam.amodal_decoder"
EFFICIENT_SAM, AMODAL_DECODER, VLM, SEGMENTER = "efficient_sam", "amodal_decoder", "vlm", "segmenter"  # kinds of checkpoint
VLM_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


class MissingWeightsError(VlmsamError, FileNotFoundError):
    """A checkpoint the run needs is not where the pipeline looks; the message says how to fix it."""


def user_cache_dir() -> Path:
    """`~/.cache/vlmsam` (the last place searched)."""
    return Path.home() / ".cache" / "vlmsam"


def efficient_sam_search_dirs() -> list[Path]:
    """The folders searched after an explicit path, in order ($VLMSAM_WEIGHTS_DIR, weights/, ~/.cache/vlmsam)."""
    dirs = []
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs += [PROJECT_WEIGHTS_DIR, user_cache_dir()]
    return dirs


def _candidate_names(variant: str) -> list[str]:
    from pipeline.models.efficient_sam import get_variant

    name = get_variant(variant).checkpoint_name
    return [name, Path(name).stem + ".safetensors"]


def _search(variant: str, explicit_path: str | os.PathLike | None) -> tuple[Path | None, list[Path], str]:
    """(found path or None, every candidate path looked at, a hint about a zip found instead)."""
    names = _candidate_names(variant)
    if explicit_path is not None:
        explicit = Path(explicit_path).expanduser()
        candidates = [explicit / n for n in names] if explicit.is_dir() else [explicit]
        dirs = [explicit] if explicit.is_dir() else [explicit.parent]
    else:
        dirs = efficient_sam_search_dirs()
        candidates = [d / n for d in dirs for n in names]
    found = next((c for c in candidates if c.is_file()), None)
    zips = [d / (names[0] + ".zip") for d in dirs if (d / (names[0] + ".zip")).is_file()]
    hint = f"found {zips[0]}: unzip it in place (python -m zipfile -e {zips[0]} {zips[0].parent})" if zips else ""
    return found, candidates, hint


def efficient_sam_source(variant: str) -> str:
    """Where to download the official checkpoint of `variant`."""
    from pipeline.models.efficient_sam import get_variant

    url = EFFICIENT_SAM_DOWNLOADS[get_variant(variant).name]
    return f"{url} (unzip: it holds efficient_sam_vits.pt)" if url.endswith(".zip") else url


def resolve_efficient_sam(variant: str, explicit_path: str | os.PathLike | None = None) -> Path:
    """The checkpoint file of EfficientSAM `variant` ("vitt" | "vits"), by the search order above.

    Raises `MissingWeightsError` naming the places searched, the download and where to put it.
    """
    found, candidates, hint = _search(variant, explicit_path)
    if found is not None:
        return found
    name = _candidate_names(variant)[0]
    if explicit_path is not None:
        where = f"{SAM_PARAM} = {explicit_path} does not exist (searched: {', '.join(map(str, candidates))})"
        fix = f"fix the path, or remove {SAM_PARAM} to use the search folders"
    else:
        where = f"{name} was not found in: {', '.join(str(d) for d in efficient_sam_search_dirs())}"
        fix = (f"put it in {PROJECT_WEIGHTS_DIR}, in ${WEIGHTS_DIR_ENV} or in {user_cache_dir()}, "
               f"or set {SAM_PARAM}")
    hint = f"; {hint}" if hint else ""
    raise MissingWeightsError(
        f"EfficientSAM {variant} checkpoint missing: {where}{hint}. Download {efficient_sam_source(variant)}; {fix}."
    )


def vlm_weights_dir(model_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(folder holding the VLM's config.json and weights, or None; a note on what is missing).

    `model_id` is a local folder or a hub id looked up in the hub cache (`cache_dir`, default
    $HF_HUB_CACHE) at `revision` (default the cached 'main'); never touches the network.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        folder = local
    else:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            cached = try_to_load_from_cache(model_id, "config.json", cache_dir=cache_dir, revision=revision)
        except HFValidationError:
            return None, f"{model_id}: no such local folder, and not a Hugging Face repo id"
        if not isinstance(cached, str):
            return None, "not in the Hugging Face cache"
        folder = Path(cached).parent
    if not (folder / "config.json").is_file():
        return None, f"{folder} has no config.json"
    missing = _missing_weight_files(folder)
    return (None, f"{folder}: {missing}") if missing else (folder, "")


def vlm_weight_files(folder: Path) -> list[Path]:
    """The weight files a VLM folder needs: the shards named by its index, else its single file."""
    for index_name in (n for n in VLM_WEIGHT_FILES if n.endswith(".index.json")):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            return [folder / s for s in shards]
    return [folder / n for n in VLM_WEIGHT_FILES if not n.endswith(".index.json") and (folder / n).is_file()]


def _missing_weight_files(folder: Path) -> str:
    """'' when the weights are complete, else what is missing."""
    files = vlm_weight_files(folder)
    if not files:
        return f"config.json but no weights ({', '.join(VLM_WEIGHT_FILES)})"
    absent = [f.name for f in files if not f.is_file()]
    return f"{len(absent)} of {len(files)} weight shards missing ({absent[0]}, …)" if absent else ""


@dataclass(frozen=True)
class WeightStatus:
    """One checkpoint: whether this configuration needs it, whether it is there, and how to get it."""

    name: str  # what it is, e.g. "EfficientSAM vitt"
    needed: bool  # the configuration reads it (a real run fails without it)
    present: bool
    path: Path | None  # where it was found
    looked_in: str  # where it was searched
    get_it: str  # where to download it / how to provide it
    note: str = ""  # why it counts as missing, or a hint
    kind: str = ""  # EFFICIENT_SAM | AMODAL_DECODER | VLM: how `pipeline.weights_check` loads it
    variant: str = ""  # EfficientSAM variant of an EFFICIENT_SAM row


def weights_status(
    sam_variant: str = "vitt",
    sam_checkpoint: str | os.PathLike | None = None,
    amodal_decoder: str | os.PathLike | None = None,
    vlm_id: str | None = None,
    vlm_revision: str | None = None,
    hf_cache_dir: str | os.PathLike | None = None,
    other_vlm_ids: Sequence[str] | None = None,
    segmenter_family: str = "efficient_sam",
    segmenter_id: str | None = None,
) -> list[WeightStatus]:
    """Every checkpoint the pipeline may use, the configured ones marked `needed`.

    Defaults: EfficientSAM vitt from the search folders, no amodal decoder, the default VLM
    (LLaVA-NeXT Mistral-7B); `other_vlm_ids` (default: every checkpoint of every registered
    VLM family, `VlmFamily.checkpoints`) are listed too.
    """
    from pipeline.attention.params import DEFAULT_MODEL_IDS
    from pipeline.vlm_families import DEFAULT_FAMILY, all_families
    from pipeline.models.efficient_sam import VARIANTS, get_variant

    get_variant(sam_variant)
    rows = []
    for variant in VARIANTS:
        explicit = sam_checkpoint if variant == sam_variant else None
        found, candidates, hint = _search(variant, explicit)
        looked = f"{SAM_PARAM} = {explicit}" if explicit is not None else ", ".join(str(d) for d in efficient_sam_search_dirs())
        rows.append(WeightStatus(f"EfficientSAM {variant}", variant == sam_variant and segmenter_family == EFFICIENT_SAM,
                                 found is not None, found, looked,
                                 efficient_sam_source(variant), "" if found else hint, EFFICIENT_SAM, variant))
    if amodal_decoder is None:
        rows.append(WeightStatus("amodal mask decoder (optional)", False, False, None, f"{AMODAL_PARAM} (not set)",
                                 f"user-supplied mask-decoder state dict; set {AMODAL_PARAM}"))
    else:
        path = Path(amodal_decoder).expanduser()
        rows.append(WeightStatus("amodal mask decoder", True, path.is_file(), path if path.is_file() else None,
                                 f"{AMODAL_PARAM} = {amodal_decoder}", "user-supplied mask-decoder state dict",
                                 kind=AMODAL_DECODER))
    vlm_id = vlm_id or DEFAULT_MODEL_IDS[DEFAULT_FAMILY]
    others = ([*DEFAULT_MODEL_IDS.values(), *(i for f in all_families() for i in f.checkpoints)]
              if other_vlm_ids is None else list(other_vlm_ids))
    download_flags = f" --cache-dir {hf_cache_dir}" if hf_cache_dir is not None else ""
    if hf_cache_dir is None:
        from huggingface_hub import constants

        hf_cache_dir = constants.HF_HUB_CACHE
    cache_label = f"Hugging Face hub cache {hf_cache_dir}"
    rows += _segmenter_rows(segmenter_family, segmenter_id, hf_cache_dir, download_flags, cache_label)
    for model_id in dict.fromkeys([vlm_id, *others]):
        revision = vlm_revision if model_id == vlm_id else None
        folder, note = vlm_weights_dir(model_id, revision, hf_cache_dir)
        is_local = Path(model_id).expanduser().is_dir()
        get_it = "local folder" if is_local else f"hf download {model_id}{download_flags}" + (f" --revision {revision}" if revision else "")
        rows.append(WeightStatus(f"VLM {model_id}", model_id == vlm_id, folder is not None, folder,
                                 str(Path(model_id).expanduser()) if is_local else cache_label, get_it, note, VLM))
    return rows


def _segmenter_rows(family: str, model_id: str | None, hf_cache_dir, download_flags: str, cache_label: str) -> list[WeightStatus]:
    """Rows of the transformers segmenter families (`Segmenter.weight_rows`), the configured one needed."""
    from pipeline.segmenters import family_names, get_family

    rows = []
    for name in family_names():
        cls = get_family(name)
        configured = name == family
        for row in cls.weight_rows((model_id or getattr(cls, "default_id", None)) if configured else None):
            folder, note = vlm_weights_dir(row["id"], None, hf_cache_dir)
            is_local = Path(row["id"]).expanduser().is_dir()
            get_it = "local folder" if is_local else f"hf download {row['id']}{download_flags} ({row['where']})"
            rows.append(WeightStatus(f"segmenter {name} {row['id']}", configured, folder is not None, folder,
                                     str(Path(row["id"]).expanduser()) if is_local else cache_label, get_it, note, SEGMENTER))
    return rows


def weights_status_for_models(models: dict | None) -> list[WeightStatus]:
    """`weights_status` for params.yaml's `models` section (`efficient_sam` and `vlm` sub-mappings)."""
    from pipeline.attention.params import VlmModelParams
    from pipeline.decoding.params import SAM_SECTION, SamModelParams

    models = dict(models or {})
    from pipeline.decoding.params import segmenter_from_section

    sam = SamModelParams.from_dict(models.get(SAM_SECTION))
    vlm = VlmModelParams.from_models_section(models)
    segmenter = segmenter_from_section(models)
    return weights_status(sam.variant, sam.checkpoint, sam.amodal_decoder, vlm.id, vlm.revision, vlm.cache_dir,
                          segmenter_family=segmenter.family, segmenter_id=segmenter.id)


def weights_command(
    params: Path = typer.Option(
        Path("params.yaml"), "--params", help="Parameter file whose `models` section says which checkpoints are needed "
        "(skipped when the file does not exist: defaults are used)."),
    load: bool = typer.Option(True, "--load/--no-load", help="Also load each needed checkpoint that is present "
                              "(EfficientSAM fully; a VLM's config and weight-file headers)."),
) -> None:
    """List every checkpoint the pipeline needs, where it looks, whether it is present and loads, and
    where to get it. Exits 1 when a needed checkpoint is missing or does not load (unless the
    profile is smoke, which reads none)."""
    from pipeline.params_file import load_params, section
    from pipeline.weights_check import load_problem

    profile = "real"
    if params.exists():
        try:
            models = section(load_params(params), "models", params)
            profile = models.get("profile", "real")
            rows = weights_status_for_models({**models, "profile": "real"})
        except (ValueError, KeyError) as e:
            typer.echo(f"error: {params}: {e}", err=True)
            raise typer.Exit(code=2) from e
        typer.echo(f"checkpoints for {params} (models.profile = {profile}):")
    else:
        rows = weights_status()
        typer.echo(f"{params} not found: showing the default configuration")
    smoke = profile == "smoke"
    broken = {}
    for row in rows:
        problem = load_problem(row) if load and row.needed and row.present and not smoke else ""
        if problem:
            broken[row.name] = problem
        mark = ("BROKEN " if problem else "ok     ") if row.present else ("MISSING" if row.needed else "absent ")
        need = "needed" if row.needed else "not used"
        typer.echo(f"[{mark}] {row.name} ({need})")
        typer.echo(f"          {'found: ' + str(row.path) if row.present else 'looked in: ' + row.looked_in}")
        if problem:
            typer.echo(f"          does not load: {problem}")
        if not row.present:
            typer.echo(f"          get it: {row.get_it}")
        if row.note:
            typer.echo(f"          note: {row.note}")
    failed = [r.name for r in rows if r.needed and not r.present] + list(broken)
    if smoke:
        typer.echo("profile smoke: no checkpoint is read (random weights, outputs marked SMOKE)")
        return
    if failed:
        typer.echo(f"{len(failed)} needed checkpoint(s) missing or not loading: {', '.join(failed)}")
        if profile == "auto":
            typer.echo("profile auto: without them the embedded sample runs the SMOKE profile; any other dataset stops")
        raise typer.Exit(code=1)
    typer.echo("every needed checkpoint is present" + (" and loads" if load else ""))
