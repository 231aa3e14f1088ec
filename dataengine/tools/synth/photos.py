"""The photo pool of the ``photo`` style: sample photographs that Python packages install on disk.

Provenance (all read from the installed packages, nothing is downloaded):

* scikit-image ``skimage/data/`` (files bundled in the wheel only; the ones
  its pooch registry fetches are not used). Licences as the docstrings of
  ``skimage.data`` state them: astronaut (NASA, public domain), chelsea (CC0,
  Stefan van der Walt), coffee (CC0, Rachel Michetti), rocket (SpaceX, public
  domain), motorcycle_left (Middlebury 2014 stereo benchmark), hubble_deep_field
  (NASA, public domain), retina (CC0), ihc (no known copyright restrictions),
  camera (CC0, Lav Varshney), moon (no licence stated), coins (Brooklyn Museum,
  no known copyright restrictions), brick, grass, gravel (CC0 textures).
* matplotlib ``mpl-data/sample_data/grace_hopper.jpg`` (US Navy photograph,
  public domain).
* scikit-learn ``sklearn/datasets/images/``: china.jpg and flower.jpg (Flickr,
  CC BY 2.0, attribution in that folder's README.txt).
* skimage's ``horse.png`` silhouette is used only as a mask shape.

Grey-scale photos get a random colour tint or stay grey. The pool is split
into two disjoint halves, ``a`` and ``b`` (``--photos a|b``), so a labeller
tuned on one half can be checked on photographs it never saw.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dataengine.errors import ConfigError, UserError


@dataclass(frozen=True)
class Photo:
    name: str
    package: str        # skimage | matplotlib | sklearn
    filename: str
    texture: str        # noun for a piece cut from it ("cat fur")
    scene: str          # noun phrase for it as a background ("a cat")
    half: str           # a | b


PHOTOS = (
    Photo("astronaut", "skimage", "astronaut.png", "spacesuit", "an astronaut portrait", "a"),
    Photo("coffee", "skimage", "coffee.png", "coffee cup", "a cup of coffee", "a"),
    Photo("motorcycle", "skimage", "motorcycle_left.png", "motorcycle", "a motorcycle in a garage", "a"),
    Photo("retina", "skimage", "retina.jpg", "retina", "a retina scan", "a"),
    Photo("grace_hopper", "matplotlib", "grace_hopper.jpg", "uniform", "a portrait in uniform", "a"),
    Photo("china", "sklearn", "china.jpg", "pagoda", "a pagoda by a lake", "a"),
    Photo("camera", "skimage", "camera.png", "cameraman", "a cameraman in a field", "a"),
    Photo("brick", "skimage", "brick.png", "brick", "a brick wall", "a"),
    Photo("grass", "skimage", "grass.png", "grass", "a lawn", "a"),
    Photo("chelsea", "skimage", "chelsea.png", "cat fur", "a cat", "b"),
    Photo("rocket", "skimage", "rocket.jpg", "launch pad", "a rocket on its launch pad", "b"),
    Photo("hubble", "skimage", "hubble_deep_field.jpg", "starfield", "a starfield", "b"),
    Photo("ihc", "skimage", "ihc.png", "tissue", "stained tissue", "b"),
    Photo("flower", "sklearn", "flower.jpg", "dahlia", "a dahlia", "b"),
    Photo("moon", "skimage", "moon.png", "moon rock", "the moon's surface", "b"),
    Photo("coins", "skimage", "coins.png", "coin", "a tray of coins", "b"),
    Photo("gravel", "skimage", "gravel.png", "gravel", "gravel", "b"),
)
SPLITS = ("all", "a", "b")


def _package_dir(package: str) -> str:
    if package == "skimage":
        import skimage.data
        return os.path.dirname(skimage.data.__file__)
    if package == "matplotlib":
        import matplotlib
        return os.path.join(matplotlib.get_data_path(), "sample_data")
    if package == "sklearn":
        import sklearn.datasets
        return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    raise ValueError(f"unknown package {package!r}")


def pool(split: str = "all") -> tuple[Photo, ...]:
    if split not in SPLITS:
        raise ConfigError(f"photos must be one of {', '.join(SPLITS)}, got {split!r}")
    return tuple(p for p in PHOTOS if split == "all" or p.half == split)


def by_name(name: str) -> Photo:
    return next(p for p in PHOTOS if p.name == name)


@functools.lru_cache(maxsize=None)
def load(name: str) -> np.ndarray:
    """The photo as read-only RGB uint8 ``[H, W, 3]`` (grey photos are repeated to three channels)."""
    photo = by_name(name)
    path = os.path.join(_package_dir(photo.package), photo.filename)
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except OSError as e:
        raise UserError(f"sample photo {photo.filename} of {photo.package} is missing: {e}") from e
    rgb.setflags(write=False)
    return rgb


@functools.lru_cache(maxsize=None)
def is_grey(name: str) -> bool:
    rgb = load(name)
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


@functools.lru_cache(maxsize=None)
def horse_mask() -> np.ndarray:
    """skimage's horse silhouette as a bool mask cropped to its bounding box."""
    with Image.open(os.path.join(_package_dir("skimage"), "horse.png")) as im:
        a = np.asarray(im.convert("L"))
    mask = a < 128
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
