"""bench/quality.py's split of the ids covering a GT trajectory (best / own pieces / after a break / bleed)."""
import importlib.util
from pathlib import Path

import numpy as np

from dataengine.metrics import scores

ROOT = Path(__file__).resolve().parents[1]


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_covering_breakdown_names_each_kind_of_extra_id():
    T, H, W = 8, 20, 40
    gt = np.zeros((T, H, W), np.int64)
    gt[:, 5:15, 5:25] = 1                       # object 1, 200 px a frame
    gt[:, 5:15, 30:38] = 2                      # object 2
    pred = np.full((T, H, W), 9, np.int64)      # background trajectory 9 ...
    pred[:, 5:15, 30:38] = 6                    # object 2, exact
    pred[:6, 5:15, 7:17] = 3                    # object 1's best piece, frames 0-5
    pred[:6, 5:15, 17:23] = 4                   # a second piece beside it (over-segmentation)
    pred[6:, 5:15, 7:23] = 5                    # frames 6-7: one id continues the object after a break
    # ... keeps object 1's left edge (10 %), and object 2's trajectory takes its right edge (10 %)
    pred[:, 5:15, 23:25] = 6
    out = _quality().covering_breakdown(gt, pred)
    assert out == {"best": 2, "own_simultaneous": 1, "own_temporal": 1, "background": 1, "other_object": 1}
    # the parts add up to the metric's ids per GT trajectory
    ids = scores.trajectory_recall(gt, pred)["ids_per_gt_trajectory"]
    assert sum(out.values()) / 2 == ids
