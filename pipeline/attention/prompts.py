"""Prompts: target phrases, question texts, chat-template rendering, and the target's query rows.

Design of the per-instance (target) prompt: one user turn holding the image and the question
from the `target` template, e.g. "Look at the box {box}. Where is the {phrase}?", where {phrase} is
the object's name (humanised category name, see `category_phrase`) and {box} its amodal box
as coordinates normalised by the original image width/height, "[x0, y0, x1, y1]" with
`box_decimals` decimals (the LLaVA-1.5 grounding convention). The query rows of the
instance are the tokens of the phrase inside that question (optionally plus the last prompt
token): their attention to the image tokens is the instance's map. The box comes BEFORE the
phrase: attention is causal, so only then do the phrase tokens know which instance is meant
(two instances of one category differ only in their box).

The chat template of the processor renders the turn with the image in the message
(`{"type": "image"}`); the processor then expands the image token into the image's feature
tokens. A template that yields no image token is an error (`PromptError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.errors import VlmsamError


class PromptError(VlmsamError, ValueError):
    """A prompt could not be built or its target tokens could not be found."""


# ---------------------------------------------------------------- phrases and question texts

_SIZE_CODE = re.compile(r"^0\d+$")


def humanise_category(name: str) -> str:
    """A category name as words: underscores become spaces; a trailing-style size code of
    digits with a leading zero becomes a decimal number.

    D2SA names carry a volume code in litres ('adelholzener_alpenquelle_classic_075' →
    'adelholzener alpenquelle classic 0.75', 'coca_cola_05' → 'coca cola 0.5'); other
    words are kept as they are (no unit is invented). COCOA / KINS names ('person',
    'traffic light') pass through unchanged apart from whitespace.
    """
    words = [w for w in re.split(r"[_\s]+", name.strip()) if w]
    out = [("0." + w[1:]) if _SIZE_CODE.match(w) else w for w in words]
    phrase = " ".join(out)
    if not phrase:
        raise PromptError(f"category name {name!r} gives an empty phrase")
    return phrase


def category_phrase(name: str, overrides: dict[str, str] | None = None) -> str:
    """The phrase naming a category in prompts: the override when given, else humanised."""
    if overrides and name in overrides:
        return overrides[name].strip()
    return humanise_category(name)


def box_text(bbox_xywh, width: int, height: int, decimals: int = 2) -> str:
    """'[x0, y0, x1, y1]' of an XYWH pixel box normalised by the image size, clipped to [0, 1]."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    coords = np.clip([x / width, y / height, (x + w) / width, (y + h) / height], 0.0, 1.0)
    return "[" + ", ".join(f"{c:.{decimals}f}" for c in coords) + "]"


@dataclass(frozen=True)
class Question:
    """A question text and the character span of its target phrase (None when it has none)."""

    text: str
    phrase_span: tuple[int, int] | None = None


def target_question(template: str, phrase: str, box: str) -> Question:
    """Fill the target template; remember where the phrase sits in the text."""
    if template.count("{phrase}") != 1:
        raise PromptError(f"target template must contain {{phrase}} exactly once: {template!r}")
    before, after = template.split("{phrase}")
    before, after = before.replace("{box}", box), after.replace("{box}", box)
    return Question(before + phrase + after, (len(before), len(before) + len(phrase)))


def occlusion_question(template: str, names: list[str] | None) -> Question:
    """Fill the occlusion template with the image's object names (None: free listing)."""
    if names is None:
        return Question(template)
    return Question(template.replace("{names}", ", ".join(names)))


# ---------------------------------------------------------------- rendering and encoding

def render_chat(processor, question_text: str) -> str:
    """One user turn [image, question] through the processor's chat template, ready for
    generation; a clear error when the rendered text holds no image token."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text}]}]
    if getattr(processor, "chat_template", None) is None:
        raise PromptError(f"{type(processor).__name__} has no chat template: cannot build prompts")
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if processor.image_token not in rendered:
        raise PromptError(
            f"the chat template of {type(processor).__name__} inserted no image token "
            f"{processor.image_token!r} for an image message; rendered prompt: {rendered!r}"
        )
    return rendered


_PER_TOKEN_KEYS = ("input_ids", "attention_mask", "offset_mapping", "mm_token_type_ids")


@dataclass
class ImageInputs:
    """The processor's output for one image, reusable by every prompt about that image.

    tensors      pixel_values, image_sizes, ... (batch of 1; no per-token outputs)
    replacement  the text the processor substitutes for the prompt's image token
    token_types  the processor returns per-token `mm_token_type_ids` (Qwen: M-RoPE input)
    """

    tensors: dict
    replacement: str
    token_types: bool = False  # the processor also returns mm_token_type_ids (rebuilt per prompt)


@dataclass
class EncodedPrompt:
    """One tokenised prompt with its image inputs.

    input_ids        int64 [N] token ids of the whole prompt (image tokens expanded)
    image_positions  int64 [M] sequence positions of the image tokens, in order
    query_rows       sequence positions of the target tokens (empty when no phrase)
    query_tokens     the target tokens as strings
    model_inputs     input_ids, attention_mask and the image tensors (torch, batch of 1)
    rendered         the chat-rendered text before image-token expansion
    image_inputs     the image part, to pass to `encode_prompt` for further prompts
    """

    input_ids: np.ndarray
    image_positions: np.ndarray
    query_rows: list[int]
    query_tokens: list[str]
    model_inputs: dict
    rendered: str
    image_inputs: ImageInputs


def encode_prompt(processor, image, question: Question, include_last_token: bool = False,
                  image_inputs: ImageInputs | None = None) -> EncodedPrompt:
    """Render and tokenise `question` about `image`; locate the phrase tokens (if any).

    Without `image_inputs` the processor runs on image and text (its own token expansion).
    With the `image_inputs` of an earlier prompt about the same image, the image processor
    is skipped: the image token is replaced by the same expansion text and the tokenizer
    runs alone, as the processor does (tests check the ids are identical).
    """
    rendered = render_chat(processor, question.text)
    tokenizer = processor.tokenizer
    # mirror ProcessorMixin.apply_chat_template: a template that writes BOS itself gets no second one
    add_special = not (tokenizer.bos_token is not None and rendered.startswith(tokenizer.bos_token))
    want_offsets = question.phrase_span is not None
    if image_inputs is None:
        enc = dict(processor(
            images=image, text=rendered, return_tensors="pt", add_special_tokens=add_special,
            return_offsets_mapping=want_offsets, return_text_replacement_offsets=True,
        ))
        replacements = enc.pop("text_replacement_offsets")[0]
        if len(replacements) != 1:
            raise PromptError(f"expected one image placeholder in the prompt, found {len(replacements)}: {rendered!r}")
        image_inputs = ImageInputs(
            {k: v for k, v in enc.items() if k not in _PER_TOKEN_KEYS},
            replacements[0]["replacement"], "mm_token_type_ids" in enc,
        )
    else:
        token = processor.image_token
        if rendered.count(token) != 1:
            raise PromptError(f"expected one image placeholder in the prompt, found {rendered.count(token)}: {rendered!r}")
        at = rendered.index(token)
        replacements = [{"span": (at, at + len(token)), "new_span": (at, at + len(image_inputs.replacement))}]
        expanded = rendered[:at] + image_inputs.replacement + rendered[at + len(token):]
        enc = dict(tokenizer(expanded, return_tensors="pt", add_special_tokens=add_special,
                             return_offsets_mapping=want_offsets))
        enc.update(image_inputs.tensors)
        if image_inputs.token_types:  # as the processor builds them from the ids
            import torch

            token_types = processor.create_mm_token_type_ids(enc["input_ids"].tolist())
            enc["mm_token_type_ids"] = torch.tensor(token_types)
    offsets = enc.pop("offset_mapping", None)
    input_ids = enc["input_ids"][0].numpy().astype(np.int64)
    image_token_id = processor.image_token_id
    image_positions = np.flatnonzero(input_ids == image_token_id)
    if image_positions.size == 0:
        raise PromptError(
            f"{type(processor).__name__}: the tokenised prompt holds no image token "
            f"(id {image_token_id}); rendered prompt: {rendered!r}"
        )
    rows: list[int] = []
    if question.phrase_span is not None:
        start = rendered.rfind(question.text)
        if start < 0:
            raise PromptError(
                f"the chat template changed the question text, cannot locate the target phrase: "
                f"question {question.text!r}, rendered {rendered!r}"
            )
        span = (start + question.phrase_span[0], start + question.phrase_span[1])
        span = _expanded_span(span, replacements)
        rows = phrase_token_rows(offsets[0].tolist(), span)
        if not rows:
            phrase = question.text[question.phrase_span[0]:question.phrase_span[1]]
            raise PromptError(f"no token of the phrase {phrase!r} found in the tokenised prompt {rendered!r}")
        if any(int(input_ids[r]) == image_token_id for r in rows):
            raise PromptError(f"target phrase tokens overlap image tokens in {rendered!r}")
    if include_last_token and (len(input_ids) - 1) not in rows:
        rows = rows + [len(input_ids) - 1]
    tokens = tokenizer.convert_ids_to_tokens([int(input_ids[r]) for r in rows])
    return EncodedPrompt(input_ids, image_positions, rows, list(tokens), enc, rendered, image_inputs)


def _expanded_span(span: tuple[int, int], replacements: list[dict]) -> tuple[int, int]:
    """Shift a character span of the rendered text into the image-token-expanded text."""

    def shift(char: int) -> int:
        gained = 0
        for r in replacements:
            if r["span"][1] <= char:
                gained += (r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0])
            elif r["span"][0] < char:
                raise PromptError("target phrase overlaps an image placeholder")
        return char + gained

    return shift(span[0]), shift(span[1])


def phrase_token_rows(offsets: list[tuple[int, int]] | list[list[int]], span: tuple[int, int]) -> list[int]:
    """Positions of the tokens whose character range overlaps `span` (zero-width tokens,
    e.g. added special tokens, never match)."""
    start, end = span
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
