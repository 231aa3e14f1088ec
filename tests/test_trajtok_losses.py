"""Hungarian-matched Focal + Dice loss, and that it trains the segmenter."""
import numpy as np
import torch

from trajtok.augment import AugmentConfig
from trajtok.data import ShardDataset
from trajtok.losses import LossConfig, hungarian_match, segmenter_loss, targets_from_labels
from trajtok.models import Segmenter
from fixtures.trajtok_toy import toy_preset, write_synthetic_dataset

torch.set_num_threads(1)


def blocks_labels(T=2, h=8, w=8):
    lab = torch.ones(T, h, w, dtype=torch.long)
    lab[:, :4, :4] = 2
    lab[:, 4:, 4:] = 3
    lab[:, :2, 6:] = 0          # unlabelled pixels
    return lab


def logits_for(labels, query_of_id, K, sharp=20.0):
    """Logits where query ``query_of_id[i]`` owns trajectory i."""
    T, h, w = labels.shape
    logits = torch.zeros(1, K, T, h, w)
    for i, q in query_of_id.items():
        logits[0, q][labels == i] = sharp
    return logits


def test_targets_from_labels():
    t = targets_from_labels(blocks_labels())
    assert t.shape == (3, 2 * 64) and torch.equal(t.sum(0), (blocks_labels() != 0).float().view(-1))


def test_matching_recovers_the_owner_queries():
    lab = blocks_labels()
    logits = logits_for(lab, {1: 5, 2: 0, 3: 3}, K=6)
    probs = logits.softmax(1)[0].flatten(1)
    rows, cols = hungarian_match(probs, targets_from_labels(lab), LossConfig())
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 5, 1: 0, 2: 3}   # ids 1, 2, 3 in order


def test_perfect_prediction_scores_best():
    lab = blocks_labels()[None]
    good = segmenter_loss(logits_for(lab[0], {1: 5, 2: 0, 3: 3}, K=6), lab)
    swapped = segmenter_loss(logits_for(lab[0], {1: 0, 2: 5, 3: 3}, K=6), lab)
    random = segmenter_loss(torch.randn(1, 6, 2, 8, 8), lab)
    assert float(good["loss"]) < 0.05
    assert torch.isclose(good["loss"], swapped["loss"])       # matching is permutation invariant
    assert float(random["loss"]) > 10 * float(good["loss"])
    assert float(good["matched"]) == 3


def test_unmatched_queries_are_pushed_to_empty():
    lab = torch.ones(1, 1, 4, 4, dtype=torch.long)             # one trajectory, two queries
    logits = torch.zeros(1, 2, 1, 4, 4, requires_grad=True)
    parts = segmenter_loss(logits, lab, LossConfig(focal_weight=0, dice_weight=0, empty_weight=1))
    assert float(parts["empty"]) > 0
    parts["loss"].backward()
    unmatched = 1 - int(hungarian_match(logits.softmax(1)[0].flatten(1), targets_from_labels(lab[0]),
                                        LossConfig())[0][0])
    assert (logits.grad[0, unmatched] > 0).all()                # gradient descent lowers its logits


def test_unlabelled_pixels_are_ignored():
    lab = blocks_labels()[None]
    a = logits_for(lab[0], {1: 5, 2: 0, 3: 3}, K=6)
    b = a.clone()
    b[..., (lab[0] == 0)] = torch.randn(int((lab[0] == 0).sum()))  # anything on unlabelled pixels
    assert torch.isclose(segmenter_loss(a, lab)["loss"], segmenter_loss(b, lab)["loss"])


def test_loss_decreases_when_overfitting_one_batch(tmp_path):
    toy = toy_preset(image_size=32, frames=4)
    write_synthetic_dataset(tmp_path, videos=2, images=0, frames=8, samples_per_shard=2, seed=3)
    toy.data.augment = AugmentConfig(enabled=False)
    toy.data.epochs = 1
    batch = next(iter(ShardDataset(tmp_path, toy.data)))
    torch.manual_seed(0)
    model = Segmenter(toy.model)
    # lr 1e-3: at 3e-3 the first ~30 steps oscillate with today's package versions and the
    # 40-step window became a coin toss; the assertion itself is unchanged.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss = segmenter_loss(model(batch["frames"])["logits"], batch["labels"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def grouped_features(labels, D=8, noise=0.0, seed=0):
    """``[1, T, D, h, w]`` features: one orthogonal direction per label, plus noise."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.eye(D)[:int(labels.max()) + 1]
    f = directions[labels].permute(0, 3, 1, 2)[None]
    return f + noise * torch.randn(f.shape, generator=g)


def test_pixel_grouping_loss_rewards_features_that_group_by_trajectory():
    from trajtok.losses import pixel_grouping_loss
    lab = blocks_labels()[None]
    grouped = pixel_grouping_loss(grouped_features(lab[0]), lab, 10.0, no_object=False)
    scrambled = pixel_grouping_loss(torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1)), lab,
                                    10.0, no_object=False)
    assert float(grouped) < 0.01 < 1.0 < float(scrambled)
    # label 0 is "unknown" without a no-object query: its pixels' features do not matter ...
    f = grouped_features(lab[0])
    g = f.clone()
    g[0].permute(0, 2, 3, 1)[lab[0] == 0] = torch.randn(int((lab[0] == 0).sum()), 8)
    assert torch.allclose(pixel_grouping_loss(f, lab, 10.0, False), pixel_grouping_loss(g, lab, 10.0, False))
    # ... with one, label 0 is a group of its own and they do
    assert float(pixel_grouping_loss(g, lab, 10.0, True)) > float(pixel_grouping_loss(f, lab, 10.0, True)) + 0.01
    # a gradient for every labelled pixel's feature
    x = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    pixel_grouping_loss(x, lab, 10.0, no_object=False).backward()
    assert (x.grad[0].permute(0, 2, 3, 1)[lab[0] != 0].abs().sum(-1) > 0).all()


def test_grouping_term_joins_the_segmenter_loss_only_when_weighted():
    lab = blocks_labels()[None]
    logits = logits_for(lab[0], {1: 0, 2: 1, 3: 2}, K=4)
    feats = torch.randn(1, 2, 8, 8, 8)
    plain = segmenter_loss(logits, lab)
    assert float(plain["grouping"]) == 0.0
    weighted = segmenter_loss(logits, lab, LossConfig(grouping_weight=0.5), features=feats)
    assert float(weighted["grouping"]) > 0
    assert torch.isclose(weighted["loss"], plain["loss"] + 0.5 * weighted["grouping"])
