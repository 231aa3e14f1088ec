"""Pure stage logic of the trajectory pseudo-label engine (no Ray here)."""

# The one version string of the project: pyproject.toml reads it (setuptools dynamic version), trajtok and
# both command lines report it, and every shard, manifest row and run.json records it as engine_version.
__version__ = "0.1.0"
ENGINE_VERSION = __version__
