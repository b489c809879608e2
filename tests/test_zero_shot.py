"""Zero-shot retrieval (THINGS-EEG2's protocol): the EEG embedding aligned to an image embedding, the retrieval and
2-way scores, chance for noise, region maps whose size does not grow with the concept count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_encoder
from regionaldiff.data.base import LayoutMaps
from regionaldiff.encoder.alignment import (
    ImageEmbeddings,
    PixelImageEmbedder,
    compute_image_embeddings,
    contrastive_loss,
)
from regionaldiff.encoder.module import EncoderPretrainModule
from regionaldiff.evaluation.retrieval import (
    candidates_and_targets,
    chance_band,
    retrieval_scores,
    split_retrieval,
    two_way_accuracy,
)


def test_layout_maps_keep_object_and_background_only():
    maps = {"a": np.array([[0, 5], [1854, 0]]), "b": np.zeros((2, 2), dtype=np.int64)}
    layout = LayoutMaps(maps)
    assert set(layout) == {"a", "b"} and len(layout) == 2 and "a" in layout
    np.testing.assert_array_equal(layout["a"], [[0, 1], [1, 0]])
    assert layout["a"].dtype == maps["a"].dtype and layout["b"].max() == 0


def test_encoder_region_head_and_alignment_head_sizes():
    encoder = tiny_encoder(num_classes=1854, num_region_labels=2, align_dim=12)
    out = encoder(torch.randn(2, 5, 40))
    assert out["region_logits"].shape == (2, 2, 4, 4)  # 2 labels, whatever the concept count
    assert out["embedding"].shape == (2, 12)
    assert not encoder.region_labels_are_classes
    plain = tiny_encoder()
    assert "embedding" not in plain(torch.randn(1, 5, 40)) and plain.region_labels_are_classes
    assert plain.predict_regions(plain.forward_features(torch.randn(1, 5, 40))).shape == (1, 4, 4, 4)


def test_contrastive_loss_prefers_matched_pairs_and_counts_repeated_images_as_positives():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(8, 16, generator=gen)
    scale = torch.tensor(np.log(10.0))
    matched = contrastive_loss(images + 0.01 * torch.randn(8, 16, generator=gen), images, scale)
    shuffled = contrastive_loss(images[torch.randperm(8, generator=gen)], images, scale)
    assert matched < 0.1 < 1.0 < shuffled
    # two trials of the same image (two subjects): each is a positive of the other, not a negative
    ids = ["a", "a", "b", "c"]
    eeg, img = torch.randn(4, 16, generator=gen), torch.randn(4, 16, generator=gen)
    logits = 3.0 * F.normalize(eeg, dim=-1) @ F.normalize(img, dim=-1).T
    targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    by_hand = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    torch.testing.assert_close(contrastive_loss(eeg, img, torch.tensor(np.log(3.0)), ids), by_hand)
    assert not torch.allclose(contrastive_loss(eeg, img, torch.tensor(np.log(3.0))), by_hand)


def test_two_way_and_topk_by_hand():
    img = np.eye(3)
    eeg = np.array([[1.0, 0.2, 0.0], [0.0, 0.1, 1.0], [0.0, 0.0, 1.0]])  # trial 1 prefers image 2
    assert two_way_accuracy(eeg, img) == pytest.approx((1.0 + 0.5 + 1.0) / 3)  # trial 1 beats image 0 only
    scores = retrieval_scores(eeg, img, None, ks=(1, 2, 5))
    assert scores["eval/retrieval_top1"] == pytest.approx(2 / 3)
    assert scores["eval/retrieval_top2"] == pytest.approx(1.0)
    assert "eval/retrieval_top5" not in scores  # more than the 3 candidates
    candidates, targets = candidates_and_targets(["x", "y", "x", "z"])
    assert candidates == ["x", "y", "z"] and targets.tolist() == [0, 1, 0, 2]


def test_noise_embeddings_retrieve_at_chance():
    rng = np.random.default_rng(0)
    n_images, n_trials = 200, 2000
    img = rng.normal(size=(n_images, 32))
    targets = rng.integers(0, n_images, n_trials)
    eeg = rng.normal(size=(n_trials, 32))  # carries nothing about the image
    scores = retrieval_scores(eeg, img, targets, ks=(1, 5))
    for k in (1, 5):
        chance, low, high = chance_band(n_images, n_trials, k)
        assert chance == k / n_images and low <= scores[f"eval/retrieval_top{k}"] <= high
    assert abs(scores["eval/retrieval_2way"] - 0.5) < 0.02
    # the same EEG with its image's embedding in it retrieves far above chance
    informed = retrieval_scores(img[targets] + rng.normal(size=(n_trials, 32)), img, targets, ks=(1,))
    assert informed["eval/retrieval_top1"] > 10 * chance_band(n_images, n_trials)[2]


def test_pixel_embedder_and_cached_table(tmp_path):
    images = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 128)]
    images[1][:8] = 255
    embedder = PixelImageEmbedder(size=4)
    table = compute_image_embeddings(embedder, ["dark", "split"], images, batch_size=1)
    assert table.array.shape == (2, 48) and table.dim == embedder.embedding_dim == 48
    np.testing.assert_allclose(table.array[0], 0.0, atol=1e-6)  # a flat image has no layout
    assert table.array[1].std() == pytest.approx(127 / 255, abs=1e-3)  # half white (+1), half grey (~0)
    table.save(tmp_path)
    loaded = ImageEmbeddings.load(tmp_path)
    torch.testing.assert_close(loaded.lookup(["split", "dark"]), torch.from_numpy(table.array[[1, 0]]))
    with pytest.raises(KeyError, match="no cached image embedding"):
        loaded.lookup(["nope"])


def test_alignment_training_retrieves_images_never_seen_in_training():
    """EEG that carries a linear image of the stimulus's embedding: after training the alignment head on 160 images,
    the 40 held-out images are retrieved far above chance (zero-shot), and the alignment loss falls."""
    gen = np.random.default_rng(0)
    n_train, n_test, dim = 160, 40, 12
    image_emb = gen.normal(size=(n_train + n_test, dim)).astype(np.float32)
    mixing = gen.normal(size=(5 * 40, dim)).astype(np.float32)
    eeg = (image_emb @ mixing.T).reshape(-1, 5, 40) + 0.5 * gen.normal(size=(n_train + n_test, 5, 40))
    eeg = torch.from_numpy(eeg.astype(np.float32))
    ids = [f"img{i}" for i in range(n_train + n_test)]
    table = ImageEmbeddings(ids, image_emb)
    torch.manual_seed(0)
    encoder = tiny_encoder(align_dim=dim, region_grid=0)
    module = EncoderPretrainModule(encoder, 3e-3, 0.0, 0.0, 0.0, 0.0, 60, w_align=1.0, image_embeddings=table)
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _epoch in range(60):
        for start in range(0, n_train, 32):
            batch = {
                "eeg": eeg[start : start + 32],
                "label": torch.zeros(len(eeg[start : start + 32]), dtype=torch.long),
                "image_id": ids[start : start + 32],
            }
            loss = module._losses(batch)["align"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    loader = [{"eeg": eeg[n_train:], "image_id": ids[n_train:]}]
    scores = split_retrieval(encoder, loader, table, ks=(1, 5))
    assert scores["eval/retrieval_top1"] > chance_band(n_test, n_test, 1)[2]
    assert scores["eval/retrieval_2way"] > 0.8
