"""English phrases for D2SA's 60 categories, used in prompts instead of the category names.

D2SA (MVTec D2S amodal) names its categories by German product SKUs
('rispentomaten', 'caona_kakaohaltiges_getraenkepulver', ...). The VLM is asked about what
each product looks like instead ('vine tomatoes in a cardboard tray'). The table is used by
default for dataset flavour 'd2sa' (`default_phrases`); `extract.phrase_overrides` wins over
it per category. Ids and names are those of the D2SA annotation files (the names D2S used
before its v1.1 renames; the renamed English names map to the same phrases). Every phrase
is distinct, since occluder names are matched to objects by phrase.
"""

from __future__ import annotations

# (category id, category name in the D2SA annotation files, phrase)
D2SA_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "adelholzener_alpenquelle_classic_075", "large glass bottle of sparkling water"),
    (2, "adelholzener_alpenquelle_naturell_075", "large glass bottle of still water"),
    (3, "adelholzener_classic_bio_apfelschorle_02", "small bottle of apple spritzer"),
    (4, "adelholzener_classic_naturell_02", "small bottle of still water"),
    (5, "adelholzener_gourmet_mineralwasser_02", "small blue glass bottle of mineral water"),
    (6, "augustiner_lagerbraeu_hell_05", "brown bottle of lager beer"),
    (7, "augustiner_weissbier_05", "brown bottle of wheat beer"),
    (8, "coca_cola_05", "bottle of Coca-Cola"),
    (9, "coca_cola_light_05", "bottle of Coca-Cola Light"),
    (10, "suntory_gokuri_limonade", "can of lemonade"),
    (11, "tegernseer_hell_03", "small brown bottle of beer"),
    (12, "corny_nussvoll", "pack of nut cereal bars"),
    (13, "corny_nussvoll_single", "single nut cereal bar"),
    (14, "corny_schoko_banane", "pack of chocolate banana cereal bars"),
    (15, "corny_schoko_banane_single", "single chocolate banana cereal bar"),
    (16, "dr_oetker_vitalis_knuspermuesli_klassisch", "box of crunchy muesli"),
    (17, "koelln_muesli_fruechte", "box of fruit muesli"),
    (18, "koelln_muesli_schoko", "box of chocolate muesli"),
    (19, "caona_kakaohaltiges_getraenkepulver", "bag of cocoa drink powder"),
    (20, "cocoba_fruehstueckskakao_mit_honig", "bag of breakfast cocoa with honey"),
    (21, "cafe_wunderbar_espresso", "bag of espresso beans"),
    (22, "douwe_egberts_professional_kaffee_gemahlen", "bag of ground coffee"),
    (23, "gepa_bio_caffe_crema", "bag of caffe crema coffee"),
    (24, "gepa_italienischer_bio_espresso", "bag of Italian espresso"),
    (25, "apple_braeburn_bundle", "tray of Braeburn apples"),
    (26, "apple_golden_delicious", "yellow Golden Delicious apple"),
    (27, "apple_granny_smith", "green Granny Smith apple"),
    (28, "apple_roter_boskoop", "red Boskoop apple"),
    (29, "avocado", "avocado"),
    (30, "banana_bundle", "bunch of bananas"),
    (31, "banana_single", "single banana"),
    (32, "clementine", "net of clementines"),
    (33, "clementine_single", "single clementine"),
    (34, "grapes_green_sugraone_seedless", "tray of green grapes"),
    (35, "grapes_sweet_celebration_seedless", "tray of red grapes"),
    (36, "kiwi", "kiwi fruit"),
    (37, "orange_single", "single orange"),
    (38, "oranges", "net of oranges"),
    (39, "pear", "pear"),
    (40, "pasta_reggia_elicoidali", "bag of elicoidali pasta"),
    (41, "pasta_reggia_fusilli", "bag of fusilli pasta"),
    (42, "pasta_reggia_spaghetti", "pack of spaghetti"),
    (43, "franken_tafelreiniger", "whiteboard eraser"),
    (44, "pelikan_tintenpatrone_canon", "pack of ink cartridges"),
    (45, "ethiquable_gruener_tee_ceylon", "box of green tea"),
    (46, "gepa_bio_und_fair_fencheltee", "box of fennel tea"),
    (47, "gepa_bio_und_fair_kamillentee", "box of chamomile tea"),
    (48, "gepa_bio_und_fair_kraeuterteemischung", "box of herbal tea"),
    (49, "gepa_bio_und_fair_pfefferminztee", "box of peppermint tea"),
    (50, "gepa_bio_und_fair_rooibostee", "box of rooibos tea"),
    (51, "kilimanjaro_tea_earl_grey", "box of Earl Grey tea"),
    (52, "cucumber", "cucumber"),
    (53, "carrot", "carrots"),
    (54, "feldsalat", "lamb's lettuce in a plastic tray"),
    (55, "lettuce", "head of lettuce"),
    (56, "rispentomaten", "vine tomatoes in a cardboard tray"),
    (57, "roma_rispentomaten", "roma vine tomatoes in a cardboard tray"),
    (58, "rucola", "rocket salad in a plastic tray"),
    (59, "salad_iceberg", "iceberg lettuce in foil"),
    (60, "zucchini", "zucchini"),
)

# D2S v1.1 renamed some categories (new name -> the annotation files' name)
RENAMED_V1_1: dict[str, str] = {
    "suntory_gokuri_lemonade": "suntory_gokuri_limonade",
    "caona_cocoa": "caona_kakaohaltiges_getraenkepulver",
    "cocoba_cocoa": "cocoba_fruehstueckskakao_mit_honig",
    "douwe_egberts_professional_ground_coffee": "douwe_egberts_professional_kaffee_gemahlen",
    "apple_red_boskoop": "apple_roter_boskoop",
    "corn_salad": "feldsalat",
    "vine_tomatoes": "rispentomaten",
    "roma_vine_tomatoes": "roma_rispentomaten",
    "rocket": "rucola",
}

D2SA_PHRASES: dict[str, str] = {name: phrase for _, name, phrase in D2SA_CATEGORIES}
D2SA_PHRASES.update({new: D2SA_PHRASES[old] for new, old in RENAMED_V1_1.items()})


def default_phrases(flavour: str | None) -> dict[str, str]:
    """{category name: phrase} used by default for a dataset flavour (empty: humanised names)."""
    return dict(D2SA_PHRASES) if flavour == "d2sa" else {}
