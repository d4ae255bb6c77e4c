"""What the transformers segmenter families (SAM, SAM-HQ, SAM 2.1) share behind the interface.

`TransformersSegmenter` loads a transformers model class like the VLM loads (a local folder or a
hub id in the Hugging Face cache, offline unless allowed; seeded random weights in the smoke
profile), lists its checkpoints for `vlmsam weights`, and decodes prompt queries over one cached
embedding through the model's own forward (`model(image_embeddings=..., input_points=...,
input_labels=..., input_boxes=...)`), one call per group of queries with the same number of real
points: these prompt encoders attend over every token, so a padded token would change the
output. A family module subclasses it with its model class, its configs, its preprocessing,
point scaling and mask post-processing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from pipeline.segmenters.segmenter import LABEL_PAD, ImageEmbedding, LoadRequest, PromptQueries, RawDecoderOutput, Segmenter

log = logging.getLogger(__name__)
SMOKE_SEED = 0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_error(message: str):
    """A `SegmenterLoadError` (imported late: the registry imports the family modules lazily)."""
    from pipeline.segmenters import SegmenterLoadError

    return SegmenterLoadError(message)


class TransformersSegmenter(Segmenter):
    """A transformers promptable segmenter; subclasses set the class attributes and hooks below.

    model_types       config.json `model_type` values of this family's checkpoints
    default_id        hub id loaded when `models.segmenter.id` is null
    variants          the published checkpoints (`vlmsam weights` lists them)
    checkpoint_files  files a checkpoint folder must hold beside its weights
    """

    max_points = None
    trained_on_negatives = True
    model_types: ClassVar[tuple[str, ...]]
    default_id: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    checkpoint_files: ClassVar[tuple[str, ...]] = ("config.json", "preprocessor_config.json")

    def __init__(self, model, image_processor, smoke: bool, provenance: dict):
        self.model = model
        self.image_processor = image_processor  # the family's preprocessing settings / object
        self.smoke = smoke
        self.provenance = provenance
        self.device = next(model.parameters()).device

    # --- family hooks ----------------------------------------------------------------------------
    @staticmethod
    def model_class():
        """The transformers model class."""
        raise NotImplementedError

    @classmethod
    def smoke_model(cls):
        """(model, image processor) of the smoke profile: seeded random weights (seed set by `load`)."""
        raise NotImplementedError

    @classmethod
    def image_processor_from(cls, model_id: str, local_files_only: bool):
        """The image processor / processing settings of a checkpoint folder or cached hub id."""
        raise NotImplementedError

    # --- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, request: LoadRequest) -> "TransformersSegmenter":
        from pipeline.attention.vlm import resolve_device

        device = resolve_device(request.device)
        if request.amodal_decoder:
            raise load_error(f"decode.completion 'decoder' is EfficientSAM's; models.segmenter.family is {cls.family!r}")
        if request.profile == "smoke":
            torch.manual_seed(SMOKE_SEED)
            model, processor = cls.smoke_model()
            log.warning("SMOKE run: %s has seeded random weights; outputs are marked smoke", cls.family)
            model_id = None
        elif request.profile == "real":
            model_id = request.model_id or cls.default_id
            model, processor = cls.from_checkpoint(model_id, request.allow_download)
        else:
            raise ValueError(f"models.profile {request.profile!r}: expected 'smoke' or 'real'")
        provenance = {"family": cls.family, "id": model_id, "profile": request.profile}
        return cls(model.to(device).eval(), processor, request.profile == "smoke", provenance)

    @classmethod
    def from_checkpoint(cls, model_id: str, allow_download: bool):
        """(model, image processor) of a local folder or a hub id in the Hugging Face cache."""
        from transformers import PretrainedConfig

        folder = Path(model_id)
        if folder.is_dir():
            for name in cls.checkpoint_files:
                if not (folder / name).is_file():
                    raise load_error(f"{folder / name}: missing from the checkpoint folder (models.segmenter.id)")
            if not any((folder / name).is_file() for name in WEIGHT_FILES):
                raise load_error(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)}) in the checkpoint folder (models.segmenter.id)")
        local_only = not allow_download
        try:
            config, _ = PretrainedConfig.get_config_dict(model_id, local_files_only=local_only)
        except OSError as err:
            raise load_error(
                f"models.segmenter.id {model_id!r}: checkpoint not found in the Hugging Face cache or as a folder "
                f"(get it with `huggingface-cli download {model_id}`, or allow downloads; published: "
                f"{', '.join(cls.variants)}): {str(err).splitlines()[0]}"
            ) from None
        if config.get("model_type") not in cls.model_types:
            raise load_error(
                f"models.segmenter.id {model_id!r}: config.json is model_type {config.get('model_type')!r}, "
                f"not {' or '.join(repr(t) for t in cls.model_types)} (models.segmenter.family {cls.family!r})"
            )
        model = cls.model_class().from_pretrained(model_id, local_files_only=local_only)
        return model, cls.image_processor_from(model_id, local_only)

    @classmethod
    def weight_rows(cls, model_id: str | None) -> list[dict]:
        ids = [model_id] if model_id else list(cls.variants)
        return [{"name": f"{cls.family} {i.split('/')[-1]}", "id": i, "where": f"https://huggingface.co/{i}"} for i in ids]

    # --- decode ----------------------------------------------------------------------------------
    def decoder_inputs(self, embedding: ImageEmbedding) -> dict:
        """Keyword arguments beside the prompts for the model's forward over a cached embedding."""
        return {"image_embeddings": embedding.embeddings}

    def scale(self, embedding: ImageEmbedding, xy: np.ndarray) -> torch.Tensor:
        """Original-pixel (x, y) [..., 2] -> the model's input grid, as the family's processor does."""
        raise NotImplementedError

    @torch.inference_mode()
    def decode_raw(self, embedding: ImageEmbedding, queries: PromptQueries) -> RawDecoderOutput:
        q = len(queries)
        counts = (queries.labels != LABEL_PAD).sum(1) if queries.labels.size else np.zeros(q, int)
        logits, ious, scores = [None] * q, [None] * q, [None] * q
        for n in np.unique(counts):
            rows = np.flatnonzero(counts == n)
            kwargs = self.decoder_inputs(embedding)
            if n > 0:
                real = queries.labels[rows] != LABEL_PAD
                pts = np.stack([queries.points[r][real[i]] for i, r in enumerate(rows)])
                labs = np.stack([queries.labels[r][real[i]] for i, r in enumerate(rows)])
                kwargs["input_points"] = self.scale(embedding, pts)[None]
                kwargs["input_labels"] = torch.from_numpy(labs.astype(np.int64)).to(self.device)[None]
            if queries.boxes is not None:
                boxes = queries.boxes[rows].reshape(len(rows), 2, 2)
                kwargs["input_boxes"] = self.scale(embedding, boxes).reshape(len(rows), 4)[None]
            out = self.model(multimask_output=True, **kwargs)
            object_scores = getattr(out, "object_score_logits", None)
            for i, r in enumerate(rows):
                logits[r], ious[r] = out.pred_masks[0, i], out.iou_scores[0, i]
                if object_scores is not None:
                    scores[r] = object_scores[0, i, 0]
        object_score = torch.stack(scores) if q and scores[0] is not None else None
        return RawDecoderOutput(torch.stack(logits), torch.stack(ious), object_score)
