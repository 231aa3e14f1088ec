"""SAM 2 video tracking of a keyframe's label map through its clip, fed from memory.

The model is built by sam2's own factory from a config of the sam2 package
(``sam2_config``) at ``image_size`` and a ``{"model": state_dict}`` checkpoint.
sam2's ``init_state`` only reads a JPEG folder or an mp4 from disk; the clip is
already decoded, so the inference state is built here from the numpy frames
with the same content ``init_state`` produces (resized, normalised images plus
the bookkeeping the predictor expects; ``tests/test_backends.py`` checks the
keys against the library's own ``init_state``).

Each object of the keyframe is added with ``add_new_mask`` and the clip is
propagated. The predictor class is sam2's batched one
(``sam2_video_predictor_legacy``): it runs all objects of a state in one
forward pass per frame, where the default class loops over objects one at a
time. Objects go into states of ``object_batch`` (bounding memory); the frames
tensor is shared between them. The output keeps, per pixel, the object with
the highest mask logit above 0, so masks are disjoint; pixels no object
claims are 0.
"""
from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from typing import Any

import numpy as np

from dataengine.config import TrackerConfig
from dataengine.errors import ConfigError
from dataengine.backends.models import autocast, build_sam2, sam2_checkpoint, torch_device
from dataengine.ops.regions import drop_small

BATCHED_PREDICTOR = "++model._target_=sam2.sam2_video_predictor_legacy.SAM2VideoPredictor"
IMAGE_MEAN = (0.485, 0.456, 0.406)   # load_video_frames' normalisation
IMAGE_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def _quiet():
    # propagate_in_video draws a tqdm bar per call, and a CPU build warns that its CUDA
    # hole-filling kernel is missing; neither belongs in the engine's output.
    with contextlib.redirect_stderr(io.StringIO()):
        yield


class Sam2Tracker:
    name = "sam2"

    def __init__(self, cfg: TrackerConfig, device: str = "cpu"):
        import torch

        if cfg.object_batch < 1:
            raise ConfigError(f"object_batch must be at least 1, got {cfg.object_batch}")
        self.cfg = cfg
        self.device = torch_device(device)
        self.checkpoint = sam2_checkpoint(cfg)
        self.predictor = build_sam2(cfg.sam2_config, self.checkpoint.path, self.device, cfg.image_size,
                                    video=True, extra_overrides=[BATCHED_PREDICTOR])
        self.mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)

    def images(self, frames: np.ndarray):
        """``[n, 3, S, S]`` float32 on the device: squashed to the model's square input and normalised."""
        import torch
        import torch.nn.functional as F

        s = self.cfg.image_size
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def new_state(self, images, height: int, width: int) -> dict[str, Any]:
        """What ``init_state`` returns, for frames already in memory (the predictor's own format)."""
        no_outputs = lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}  # noqa: E731
        return {
            "images": images, "num_frames": len(images), "video_height": height, "video_width": width,
            "offload_video_to_cpu": False, "offload_state_to_cpu": False,
            "device": self.device, "storage_device": self.device,
            "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
            "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
            "output_dict": no_outputs(), "output_dict_per_obj": {}, "temp_output_dict_per_obj": {},
            "consolidated_frame_inds": {"cond_frame_outputs": set(), "non_cond_frame_outputs": set()},
            "tracking_has_started": False, "frames_already_tracked": {},
        }

    def track(self, frames: np.ndarray, labels0: np.ndarray) -> np.ndarray:
        import torch

        out = np.zeros((len(frames),) + labels0.shape, dtype=np.int32)
        out[0] = labels0
        ids = np.unique(labels0[labels0 != 0])
        if len(frames) == 1 or len(ids) == 0:
            return out
        h, w = labels0.shape
        with torch.inference_mode(), autocast(self.device), _quiet():
            images = self.images(frames)
            # Running best logit per pixel (starting at 0: only positive logits claim a pixel).
            best = torch.zeros((len(frames) - 1, h, w), device=self.device)
            owner = torch.zeros((len(frames) - 1, h, w), dtype=torch.int64, device=self.device)
            labels = torch.from_numpy(np.ascontiguousarray(labels0)).to(self.device)
            for start in range(0, len(ids), self.cfg.object_batch):
                group = ids[start:start + self.cfg.object_batch]
                state = self.new_state(images, h, w)
                for i in group:
                    self.predictor.add_new_mask(state, 0, int(i), labels == int(i))
                for t, obj_ids, logits in self.predictor.propagate_in_video(state):
                    if t == 0:
                        continue
                    group_ids = torch.as_tensor(obj_ids, dtype=torch.int64, device=self.device)
                    top, arg = logits[:, 0].float().max(dim=0)
                    better = top > best[t - 1]
                    best[t - 1] = torch.where(better, top, best[t - 1])
                    owner[t - 1] = torch.where(better, group_ids[arg], owner[t - 1])
                del state
            out[1:] = owner.cpu().numpy().astype(np.int32)
        min_pixels = max(1, int(self.cfg.min_area * h * w))
        for t in range(1, len(out)):
            out[t] = drop_small(out[t], min_pixels)
        return out
