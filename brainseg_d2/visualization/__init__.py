"""Pictures of MRI slices with tumour masks, drawn with Detectron2's ``Visualizer``.

* :mod:`~brainseg_d2.visualization.draw`: one slice: masks, contours, titles,
  legends, dataset dicts and instance predictions;
* :mod:`~brainseg_d2.visualization.compose`: side-by-side panels, montages, GIFs;
* :mod:`~brainseg_d2.visualization.render`: the pictures of one predicted volume.

Ground truth for the pictures comes from the data layer
(:func:`brainseg_d2.data.ground_truth.label_map_masks`), as the evaluator's does.
"""

from brainseg_d2.visualization.compose import montage, side_by_side, tumour_slices, write_gif
from brainseg_d2.visualization.draw import (
    auto_scale,
    category_colors,
    display_image,
    draw_dataset_dict,
    draw_instances,
    make_metadata,
    overlay_masks,
)
from brainseg_d2.visualization.render import CaseRender, render_case, render_prediction

__all__ = [
    "CaseRender",
    "auto_scale",
    "category_colors",
    "display_image",
    "draw_dataset_dict",
    "draw_instances",
    "make_metadata",
    "montage",
    "overlay_masks",
    "render_case",
    "render_prediction",
    "side_by_side",
    "tumour_slices",
    "write_gif",
]
