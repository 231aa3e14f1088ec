"""SAM 2 video tracking of a keyframe's label map through its clip, fed from memory.

The model is built by sam2's own factory from a config of the sam2 package
(``sam2_config``) at ``image_size`` and a ``{"model": state_dict}`` checkpoint.
sam2's ``init_state`` only reads a JPEG folder or an mp4 from disk; the clip is
already decoded, so the inference state is built here from the numpy frames
with the same content ``init_state`` produces (resized, normalised images plus
the bookkeeping the predictor expects; ``tests/test_backends.py`` checks the
keys against the library's own ``init_state``).

Each object of the keyframe becomes a mask prompt on the clip's first frame and
the clip is propagated. The predictor class is sam2's batched one
(``sam2_video_predictor_legacy``): it runs all objects of a state in one
forward pass per frame, where the default class loops over objects one at a
time. Objects go into states of ``object_batch`` (bounding memory). The output
keeps, per pixel, the object with the highest mask logit above 0, so masks are
disjoint; pixels no object claims are 0.

Two things sam2's own entry points repeat per object or per clip are done once
here (bench/gpu.py measures the two paths against each other):

* the prompts: ``add_new_mask`` runs the SAM heads for one object and then
  re-consolidates every object added so far at video resolution (quadratic in
  the object count). ``batched_prompts`` runs the same first-frame inference
  once for all objects of the state and leaves each object's slice where
  ``add_new_mask`` leaves it, so ``propagate_in_video`` consolidates and
  tracks exactly as before (``batched_prompts=False`` keeps the library path;
  ``tests/test_backends.py`` compares the two);
* the image features: the predictor encodes one frame per call and caches
  only the last one, so every clip and every object batch encodes its frames
  again (a keyframe twice: it ends one clip and starts the next). After
  ``prepare_video``, ``track(..., start=k)`` encodes each frame of the video
  once, ``feature_batch`` frames per pass as the clips reach them, and hands
  the clip's frames to the predictor through its own feature cache, which it
  then never misses.
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
        if cfg.feature_batch < 0:
            raise ConfigError(f"feature_batch must be 0 (sam2's own encoding) or more, got {cfg.feature_batch}")
        self.cfg = cfg
        self.device = torch_device(device)
        self.checkpoint = sam2_checkpoint(cfg)
        self.predictor = build_sam2(cfg.sam2_config, self.checkpoint.path, self.device, cfg.image_size,
                                    video=True, extra_overrides=[BATCHED_PREDICTOR])
        self.mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)
        # the video last given to prepare_video, and its frames' (image, backbone output) still needed
        self.video: np.ndarray | None = None
        self.video_features: dict[int, tuple[Any, dict]] = {}

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

    def encode(self, frames: np.ndarray) -> dict[int, tuple[Any, dict]]:
        """Image features of ``frames``, ``feature_batch`` frames per encoder pass, in the layout of the
        predictor's feature cache: position -> (image [1, 3, S, S], backbone output of that one frame)."""
        import torch

        features: dict[int, tuple[Any, dict]] = {}
        if self.cfg.feature_batch < 1:
            return features             # sam2 encodes each frame itself, on demand
        with torch.inference_mode(), autocast(self.device):
            images = self.images(frames)
            for first in range(0, len(images), self.cfg.feature_batch):
                batch = self.predictor.forward_image(images[first:first + self.cfg.feature_batch])
                # The position encoding depends on the feature map's shape only: one copy serves every frame.
                position = [p[:1].clone() for p in batch["vision_pos_enc"]]
                for j in range(len(batch["backbone_fpn"][0])):
                    features[first + j] = (images[first + j:first + j + 1],
                                           {"backbone_fpn": [f[j:j + 1] for f in batch["backbone_fpn"]],
                                            "vision_pos_enc": position})
        return features

    def prepare_video(self, frames: np.ndarray) -> None:
        """Start a video: ``track(clip, labels, start=k)`` then encodes each of its frames once, as the clips
        reach them, ``feature_batch`` frames per pass, and forgets the frames before the clip it tracks (the
        labeller's clips move forward), so memory stays bounded however long the video is."""
        self.video = frames
        self.video_features = {}

    def video_clip_features(self, start: int, n: int) -> dict[int, tuple[Any, dict]] | None:
        """Features of frames ``start .. start + n - 1`` of the prepared video, keyed 0..n-1; None when the
        clip lies outside it or the library's own encoding is configured."""
        fb = self.cfg.feature_batch
        if self.video is None or fb < 1 or start < 0 or start + n > len(self.video):
            return None
        for t in [t for t in self.video_features if t < start]:
            del self.video_features[t]
        missing = [t for t in range(start, start + n) if t not in self.video_features]
        if missing:                     # whole batches from the first missing frame: the next clip's are ready
            first = missing[0]
            end = min(len(self.video), first + -(-(start + n - first) // fb) * fb)
            self.video_features.update({first + j: f for j, f in self.encode(self.video[first:end]).items()})
        return {j: self.video_features[start + j] for j in range(n)}

    def add_prompts(self, state: dict[str, Any], labels, group: np.ndarray) -> None:
        """Every object of ``group`` as a mask prompt on frame 0, in one first-frame inference."""
        import torch
        import torch.nn.functional as F

        p = self.predictor
        masks = torch.stack([labels == int(i) for i in group])[:, None].float()
        if masks.shape[-2:] != (p.image_size, p.image_size):   # add_new_mask's resize, for all objects at once
            masks = F.interpolate(masks, size=(p.image_size, p.image_size), mode="bilinear", align_corners=False,
                                  antialias=True)
            masks = (masks >= 0.5).float()
        indices = [p._obj_id_to_idx(state, int(i)) for i in group]   # registers the objects (bookkeeping)
        for n, index in enumerate(indices):
            state["mask_inputs_per_obj"][index][0] = masks[n:n + 1]
        out, _ = p._run_single_frame_inference(
            inference_state=state, output_dict=state["output_dict"], frame_idx=0, batch_size=len(group),
            is_init_cond_frame=True, point_inputs=None, mask_inputs=masks, reverse=False, run_mem_encoder=False)
        for n, index in enumerate(indices):     # each object's slice where add_new_mask leaves it
            state["temp_output_dict_per_obj"][index]["cond_frame_outputs"][0] = {
                k: (v[n:n + 1] if torch.is_tensor(v) else v) for k, v in out.items()}

    def track(self, frames: np.ndarray, labels0: np.ndarray, start: int | None = None) -> np.ndarray:
        """``start``: the clip's first frame in the video given to ``prepare_video`` (its features are reused);
        None encodes the clip's frames here."""
        import torch

        out = np.zeros((len(frames),) + labels0.shape, dtype=np.int32)
        out[0] = labels0
        ids = np.unique(labels0[labels0 != 0])
        if len(frames) == 1 or len(ids) == 0:
            return out
        h, w = labels0.shape
        with torch.inference_mode(), autocast(self.device), _quiet():
            features = None if start is None else self.video_clip_features(start, len(frames))
            if features is None:
                features = self.encode(frames)
            images = (torch.cat([features[j][0] for j in range(len(frames))]) if features
                      else self.images(frames))
            # Running best logit per pixel (starting at 0: only positive logits claim a pixel).
            best = torch.zeros((len(frames) - 1, h, w), device=self.device)
            owner = torch.zeros((len(frames) - 1, h, w), dtype=torch.int64, device=self.device)
            labels = torch.from_numpy(np.ascontiguousarray(labels0)).to(self.device)
            for first in range(0, len(ids), self.cfg.object_batch):
                group = ids[first:first + self.cfg.object_batch]
                state = self.new_state(images, h, w)
                state["cached_features"] = dict(features)   # a full cache: the predictor never encodes
                if self.cfg.batched_prompts:
                    self.add_prompts(state, labels, group)
                else:
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
