"""The project's own sample corpus, with exact ground truth (``trajdata synth``).

Two styles of scene, both painted back to front by our own code, so the label
map of each frame is exact and masks are disjoint by construction:

* ``photo`` (default, ``photo.py``): pieces of real photographs cut into
  irregular shapes, moving, scaling and occluding each other over a
  photograph seen by a panning and zooming camera, with motion blur, sensor
  noise and web-quality H.264 / JPEG. The photographs are the sample images
  that scikit-image, matplotlib and scikit-learn install on disk; their list,
  provenance and licences are in ``photos.py``.
* ``flat`` (``flat.py``): the project's first corpus, textured geometric
  shapes of separable colours over a smooth panning background.

``make_corpus`` writes three views of the same media: ``media/`` (a plain
folder, as ``--source local`` reads it; ``STEM.txt`` captions and ``STEM.json``
clip labels beside each file), ``wds/`` (video2dataset / img2dataset-style
shards, see FORMATS.md) and ``gt/`` (ground truth as trajectory shards v1 plus
a manifest). A wds sample maps to its ground truth through its url
(``synth://video_000.mp4`` -> key ``video_000``). Everything is a pure
function of the arguments: x264 runs single-threaded and every timestamp is
fixed, so equal arguments give byte-identical files (with the same library
versions).
"""
from .captions import COUNT_BINS
from .corpus import (DEFAULT_STYLE, IMAGE_SIZES, JPEG_QUALITY, STYLES, encode_jpeg, make_corpus, render_image,
                     write_video)
from .photos import SPLITS as PHOTO_SPLITS

__all__ = ["COUNT_BINS", "DEFAULT_STYLE", "IMAGE_SIZES", "JPEG_QUALITY", "PHOTO_SPLITS", "STYLES", "encode_jpeg",
           "make_corpus", "render_image", "write_video"]
