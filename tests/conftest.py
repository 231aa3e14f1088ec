import os

import pytest

from fixtures.scenes import render_scene

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def scene():
    return render_scene
