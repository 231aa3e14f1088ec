"""Pure stage logic of the trajectory pseudo-label engine (no Ray here)."""

ENGINE_VERSION = "0.1.0"
