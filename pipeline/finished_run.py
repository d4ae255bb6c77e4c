"""A finished run read back for looking at it: the predictions checked against the ground
truth, per-instance IoUs, point prompts and the VLM's occlusion answers (what the gallery and
the FiftyOne export show)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FinishedRun:
    """The run's outputs, keyed by ground-truth instance id.

    amodal, visible   `CheckedPredictions` of the decode stage's two files
    info, sample, choice   the attention cache's info, the stored SampleParams and LayerChoice
                      (what `pipeline.api.whole_image_maps` needs to redraw the sampler's map)
    ious              gt_id -> `InstanceIoU`, for every instance with a prediction
    points            gt_id -> [(rank, x, y, label)], best first, original-image pixels
    occlusion         gt_id -> (occluder names the VLM gave, occlusion error of the image)
    smoke             any of the run's files says smoke (random weights)
    """

    amodal: object
    visible: object
    info: object
    sample: object
    choice: object
    ious: dict
    points: dict[int, list[tuple[int, float, float, int]]]
    occlusion: dict[int, tuple[list[str], str]]
    smoke: bool


def read_finished_run(dataset, outputs) -> FinishedRun:
    """Read the run `outputs` (`pipeline.visualize.RunOutputs`) made on `dataset`; clear errors
    for a missing output, a prediction that does not fit the ground truth, or unpaired files."""
    from pipeline.attention.cache import read_occlusion
    from pipeline.evaluation.checked_predictions import check_pairing, read_checked
    from pipeline.evaluation.miou import instance_ious

    outputs.check()
    amodal = read_checked(outputs.amodal, dataset)
    visible = read_checked(outputs.visible, dataset)
    check_pairing(amodal, visible)
    info, table, meta, sample, choice = outputs.sampler_view()
    cols = table.select(["gt_id", "rank", "x", "y", "label"]).to_pydict()
    points: dict[int, list[tuple[int, float, float, int]]] = {}
    for g, r, x, y, lab in zip(cols["gt_id"], cols["rank"], cols["x"], cols["y"], cols["label"]):
        points.setdefault(int(g), []).append((int(r), float(x), float(y), int(lab)))
    occlusion = {gt: (names, err) for (_, gt), (names, _, err) in read_occlusion(outputs.cache).items()}
    return FinishedRun(
        amodal=amodal, visible=visible, info=info, sample=sample, choice=choice,
        ious={r.gt_id: r for r in instance_ious(dataset, amodal, visible)},
        points={g: sorted(p) for g, p in points.items()}, occlusion=occlusion,
        smoke=bool(info.smoke or meta.get("smoke") or amodal.smoke or visible.smoke))


def load_shown_dataset(params_path, outputs):
    """The dataset that looking at the run `outputs` shows, from the parameter file's `dataset`
    section: the annotated instances, or under dataset.proposals the proposal queries, those
    matched to a ground-truth instance carrying its masks and occlusion rate, paired as
    evaluate pairs them (`evaluate.proposal_score`); the unmatched keep none."""
    from pipeline.datasets.params import DatasetParams, load
    from pipeline.evaluation.params import EvaluateParams
    from pipeline.evaluation.proposals import paired_from_file
    from pipeline.params_file import load_params, reading, section

    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        rule = (EvaluateParams.from_dict(section(params, "evaluate", params_path)).proposal_score
                if dataset_params.proposals is not None else None)
    dataset = load(dataset_params)
    if dataset.proposals is None:
        return dataset
    return paired_from_file(dataset, outputs.amodal, rule)
