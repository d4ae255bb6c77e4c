"""The synthetic product catalogue: D2SA-style category names, each with a look and a shape."""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("blob", "star", "ell", "arc", "cross")
TEXTURES = ("stripes", "noise", "gradient", "checker")


@dataclass(frozen=True)
class Category:
    """One product: `colour`/`accent` (RGB) feed its `texture`; `shape` is its silhouette kind."""

    id: int
    name: str
    supercategory: str
    shape: str
    texture: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]


_TABLE = [
    # name, supercategory, shape, texture, colour, accent
    ("alpine_spring_water_050", "bottle", "ell", "gradient", (70, 140, 220), (220, 235, 250)),
    ("oat_crunch_muesli_375", "box", "cross", "noise", (205, 160, 80), (120, 80, 30)),
    ("green_tea_bags_020", "box", "ell", "stripes", (60, 150, 70), (230, 240, 200)),
    ("tomato_passata_500", "jar", "blob", "gradient", (200, 40, 35), (250, 170, 120)),
    ("bio_carrots_bundle", "vegetable", "star", "noise", (235, 120, 30), (90, 160, 50)),
    ("dark_chocolate_bar_100", "bar", "arc", "checker", (85, 50, 30), (170, 120, 80)),
    ("sparkling_lemonade_033", "can", "blob", "stripes", (240, 220, 60), (40, 120, 60)),
    ("paprika_chips_175", "bag", "star", "stripes", (215, 60, 50), (250, 200, 60)),
    ("whole_grain_crackers_250", "box", "cross", "checker", (190, 140, 90), (250, 235, 200)),
    ("gouda_cheese_slices_150", "pack", "arc", "gradient", (245, 200, 70), (255, 245, 190)),
    ("espresso_beans_500", "bag", "blob", "noise", (60, 40, 35), (150, 110, 70)),
    ("apple_juice_100", "bottle", "ell", "noise", (150, 200, 60), (250, 220, 120)),
    ("corn_flakes_family_750", "box", "cross", "stripes", (250, 160, 20), (40, 90, 180)),
    ("hazelnut_spread_400", "jar", "arc", "noise", (120, 70, 40), (240, 230, 220)),
    ("peppermint_gum_pack", "pack", "star", "checker", (40, 190, 190), (240, 250, 250)),
    ("banana_bundle", "fruit", "arc", "gradient", (245, 215, 50), (140, 170, 40)),
]

CATEGORIES: tuple[Category, ...] = tuple(
    Category(i + 1, *row) for i, row in enumerate(_TABLE)
)
