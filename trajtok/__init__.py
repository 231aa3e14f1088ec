"""Training package for trajectory tokens: models, losses, shard loader, training loops.

Imports neither Ray nor ``dataengine`` internals; the only link to the engine is
the shard format (``dataengine.format.shards`` and ``dataengine.format.trajformat``).
"""

from dataengine import __version__  # the project's one version string

__all__ = ["__version__"]
