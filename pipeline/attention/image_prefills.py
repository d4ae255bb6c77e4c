"""Count the images a VLM prefills: the forward passes that embed image features.

A forward of the multimodal model embeds images when it is given pixel inputs
(`pixel_values`) or image features that `generate` encoded before its prefill
(`mm_encoder_outputs`); decoding steps and suffix forwards on a KV cache get neither. Each
row of such a forward is one image prefilled (every prompt of the pipeline holds one image),
so `count` / images is the number of image prefills per image (1 when the occlusion answer
and the target prompts share one prefill, see `extract.py`). The hook reads shapes only:
no device sync.
"""

from __future__ import annotations

_IMAGE_INPUTS = ("pixel_values", "mm_encoder_outputs")


class ImagePrefillCounter:
    """Context manager counting image prefills of `model` (a forward pre-hook) while open."""

    def __init__(self, model):
        self.model = model
        self.count = 0
        self._handle = None

    def _hook(self, module, args, kwargs):
        if not any(kwargs.get(key) is not None for key in _IMAGE_INPUTS):
            return
        rows = next(x for x in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args) if x is not None)
        self.count += int(rows.shape[0])

    def __enter__(self) -> "ImagePrefillCounter":
        self._handle = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None

    def per_image(self, images: int) -> float:
        """Image prefills per image over `images` images (0 images: 0.0)."""
        return self.count / images if images else 0.0
