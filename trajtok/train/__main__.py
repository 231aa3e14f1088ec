"""``torchrun -m trajtok.train DATA OUTPUT [PRESET] [MAX_STEPS]``: the segmenter loop."""
from .segmenter import _main

_main()
