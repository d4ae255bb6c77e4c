"""The 8-panel pipeline figure renders, with and without ground truth."""

import numpy as np
from PIL import Image

from pipeline.figure import FigureData, build_pipeline_figure, draw_pipeline_figure


def _data(with_gt: bool, smoke: bool) -> FigureData:
    h, w = 60, 80
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((xx - 30) ** 2 + (yy - 25) ** 2) / 80.0)
    mask = blob > 0.3
    return FigureData(
        image=np.full((h, w, 3), 128, np.uint8), box_xyxy=(10, 5, 50, 45), class_name="water bottle",
        occlusion_text='{"occluders": ["cup"]}', layer_maps={14: blob, 20: blob * 0.5},
        aggregated_map=blob, points=np.array([[30, 25], [45, 40]]), labels=np.array([1, 0]),
        visible_mask=mask, visible_score=0.8, amodal_mask=mask | (blob > 0.1), amodal_score=0.7, smoke=smoke,
        gt_visible=mask if with_gt else None, gt_amodal=(blob > 0.15) if with_gt else None, notes=["hull"],
        occluder_masks=[("cup (located)", (xx > 40) & (yy < 30))],
    )


def test_figure_writes_png(tmp_path):
    for with_gt in (True, False):
        out = tmp_path / f"fig_{with_gt}.png"
        draw_pipeline_figure(_data(with_gt, smoke=True), out)
        img = Image.open(out)
        assert img.size[0] > 800 and img.size[1] > 400


def test_gt_panel_and_occluders_have_legends():
    import matplotlib.pyplot as plt

    for with_gt in (True, False):
        fig = build_pipeline_figure(_data(with_gt, smoke=False))
        legends = {ax.get_title().split(" ")[0]: [t.get_text() for t in ax.get_legend().get_texts()]
                   for ax in fig.axes if ax.get_legend() is not None}
        plt.close(fig)
        assert legends["7"] == ["occluder: cup (located)"]
        if with_gt:
            assert [t.split(":")[0] for t in legends["8"]] == ["hit", "missed", "extra"]
        else:
            assert "8" not in legends
