"""What every family's smoke model shares: the tiny sizes, the locally trained byte-level BPE
tokenizer, and the seeded model build.

Smoke models are the real model and processor classes with tiny configs; their weights are drawn
from a seeded generator with a larger-than-usual `initializer_range`, so attention is far from
uniform and numerical tests discriminate. Everything built with them has random weights: any
output of it is a SMOKE result.
"""

from __future__ import annotations

from functools import lru_cache

INITIALIZER_RANGE = 0.2  # std of the random weights (real configs: 0.02)
TEXT_LAYERS = 3
TEXT_HIDDEN = 64
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
VISION_HIDDEN = 32
VISION_LAYERS = 2

# Words the BPE merges are trained on: prompt phrasing and the category names of the datasets
# (D2SA, COCO(A), KINS). Any other text still tokenises (byte-level alphabet), only into more
# pieces.
_CORPUS_WORDS = """
USER: ASSISTANT: [INST] [/INST] user assistant system
Which objects in the image occlude the ? Answer with a JSON list of object names, or an empty
list [] if nothing occludes it. The object is the one in the box . Describe where the is.
What is hidden behind the object occluded occluding occluder visible amodal mask segment
none no yes a an of in on at to and or is are this that image picture photo region box
left right top bottom behind front partly partially fully covered by under over next
person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop
sign parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack
umbrella handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove
skateboard surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple
sandwich orange broccoli carrot hot dog pizza donut cake chair couch potted plant bed dining
table toilet tv laptop mouse remote keyboard cell phone microwave oven toaster sink
refrigerator book clock vase scissors teddy hair drier toothbrush
pedestrian cyclist van tram misc person sitting
avocado bundle kiwi lemon lime onion pepper tomato cucumber zucchini salad cabbage carton
milk juice can jar pack packet cereal box pasta rice bread roll rolls cookies chocolate
bar candy tea coffee water soda beer yogurt cheese butter ham sausage chips crackers
oatmeal salt sugar flour oil vinegar sauce ketchup mustard shampoo soap toothpaste
tissue towels detergent sponge brush foil bag paper plastic clamp pear peach plum grapes
""".split()


def _corpus() -> list[str]:
    words = _CORPUS_WORDS
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    # Repeat so that frequent words get whole-word merges; capitalised forms for prompts.
    return lines * 4 + [w.capitalize() for w in words] + [" " + w for w in words] * 3


@lru_cache(maxsize=None)
def _tokenizer_json(special_tokens: tuple[str, ...], bos: str | None) -> str:
    """Train the byte-level BPE once per special-token set; returned as JSON (immutable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def smoke_tokenizer(special_tokens: tuple[str, ...], *, bos: str | None = None, eos: str, pad: str,
                    unk: str | None = None, additional: tuple[str, ...] = (), plain: tuple[str, ...] = ()):
    """A left-padding fast tokenizer on the locally trained BPE with `special_tokens` as its first
    ids (in this order), `additional` of them registered as special, and `plain` added tokens after
    the vocabulary that are not special; `bos` is prepended to every text when given."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    names = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(tuple(special_tokens), bos)),
        additional_special_tokens=list(additional), **{k: v for k, v in names.items() if v is not None},
    )
    if plain:
        tokenizer.add_tokens(list(plain))
    tokenizer.padding_side = "left"
    return tokenizer


def seeded_model(model_class: str, config, seed: int, attn_implementation: str, tokenizer,
                 bos_token_id: int | None = None):
    """The transformers class `model_class` built from `config` with weights drawn for `seed`
    (bit-identical per seed), float32, `eval()`, no gradients, the tokenizer's end and pad ids in
    its generation config (`bos_token_id`: the generation config's BOS, default the tokenizer's)."""
    import torch
    import transformers as tf

    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(tf, model_class)._from_config(config, attn_implementation=attn_implementation,
                                                      dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    model.generation_config.bos_token_id = tokenizer.bos_token_id if bos_token_id is None else bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
