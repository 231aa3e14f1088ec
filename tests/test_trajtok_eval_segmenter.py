"""`trajtok eval-segmenter`: the scoring lives in trajtok.evaluate, the command only parses and prints."""
from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import cli
from fixtures.trajtok_toy import toy_preset, write_synthetic_dataset
from trajtok.checkpoint import save_segmenter
from trajtok.evaluate import SUMMARY_KEYS, score_segmenter
from trajtok.models.segmenter import build_segmenter

torch.set_num_threads(1)


def test_eval_segmenter_scores_every_sample_and_the_command_prints_the_same(tmp_path):
    write_synthetic_dataset(tmp_path / "shards", videos=2, images=1, frames=6, samples_per_shard=2, seed=5)
    torch.manual_seed(0)
    ckpt = save_segmenter(build_segmenter(toy_preset().model), tmp_path / "seg.safetensors")
    seen = []
    result = score_segmenter(ckpt, tmp_path / "shards", on_sample=lambda: seen.append(1))
    assert len(seen) == 3 and result["samples"] == 3 and result["errors"] == 0
    assert sorted(row["key"] for row in result["per_sample"]) == ["img0000", "vid0000", "vid0001"]
    assert list(result["summary"]) == list(SUMMARY_KEYS) and 0.0 <= result["summary"]["STQ"] <= 1.0

    out = CliRunner().invoke(cli.trajtok_app, ["eval-segmenter", "--checkpoint", str(ckpt),
                                               "--data", str(tmp_path / "shards"), "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["summary"] == json.loads(json.dumps(result["summary"]))   # same model, same numbers
    assert f"STQ {result['summary']['STQ']:.4f}" in out.stdout
    # as trajdata eval: a table, and videos and images pooled apart (by_media in the JSON)
    assert sorted(written["by_media"]) == ["image", "video"] and written["by_media"]["image"]["samples"] == 1
    assert "trajtok eval-segmenter: 3 samples scored, 0 not decodable" in out.stdout
    assert "ALL videos" in out.stdout and "ALL images" in out.stdout and "vid0001" in out.stdout
