"""Parameter / FLOP accounting of the tokenizer presets."""
import pytest

from trajtok.info import format_info, model_info
from trajtok.models import Tokenizer
from trajtok.presets import get_preset
from fixtures.trajtok_toy import toy_preset


@pytest.mark.parametrize("preset", ["paper", "tiny"])
def test_module_counts_add_up(preset):
    info = model_info(preset)
    assert sum(info["modules"].values()) == info["total"]
    assert info["total"] > info["segmenter_total"] > info["modules"]["segmenter.backbone"]
    flops = info["flops_per_clip"]
    assert info["clip"]["frames"] == 16
    parts = flops["segmenter.backbone"] + flops["segmenter.perceiver"] + flops["segmenter.other"]
    assert flops["total"] == parts + flops["trajectory_encoder"]
    assert min(flops.values()) > 0
    assert preset in format_info(info)


def test_paper_preset_size():
    info = model_info("paper", flops=False)
    assert info["modules"]["segmenter.backbone"] == 27_818_592       # timm convnext_tiny, features only
    assert 40e6 < info["total"] < 52e6                               # the paper's tokenizer: ~46 M


def test_counts_match_a_real_model():
    toy = toy_preset()
    real = Tokenizer(toy.model, toy.encoder)
    info = model_info(toy, flops=False)
    assert info["total"] == sum(p.numel() for p in real.parameters())
    assert info["modules"]["trajectory_encoder"] == sum(p.numel() for p in real.encoder.parameters())
    assert get_preset("paper").model.num_queries == 128
