"""The gallery: one card per ground-truth instance of a finished run (reports/gallery/).

    index.html     the page: cards with the crop, switchable attention overlay, points,
                   contours of the predictions against ground truth, IoUs, occlusion,
                   occluders the VLM named, amodal_source and fallback; sorted worst first,
                   sortable and filterable, paged; inline JS and CSS, opens from file://
    cards/<gt_id>.jpg        the crop with contours and points
    cards/<gt_id>_att.png    the attention over the crop (the switchable overlay)
    gallery.csv    every instance with a prediction (shown on the page or not), worst first
"""

from pipeline.gallery.params import GalleryParams

__all__ = ["GalleryParams"]
