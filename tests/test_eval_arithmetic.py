"""Arithmetic of the evaluation metrics on small hand-built inputs with known answers (no networks)."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from regionaldiff.evaluation.distribution import frechet_distance_from_features, inception_score_from_logits
from regionaldiff.evaluation.identification import (
    correlation_distance,
    correlation_matrix,
    mse_matrix,
    pairwise_identification,
    pairwise_metrics,
    ssim_matrix,
    two_way_identification,
)
from regionaldiff.evaluation.nway import nway_topk_accuracy
from regionaldiff.evaluation.region import region_alignment
from regionaldiff.evaluation.retrieval import retrieval_topk

# three zero-mean, mutually orthogonal vectors: corr(x, x) = 1, corr(x, y) = 0
A, B, C = [1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]


def images(n=4, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# -- MindEye two-way identification / correlation distance ----------------------------------------------------------
def test_two_way_identical_features_score_one():
    feats = np.random.default_rng(0).normal(size=(6, 10))
    assert two_way_identification(feats, feats) == 1.0
    assert correlation_distance(feats, feats) == pytest.approx(0.0, abs=1e-12)


def test_two_way_by_hand():
    ref = np.array([A, B, C])
    gen = np.array([A, C, B])  # gen 0 matches, gens 1 and 2 are swapped
    # r[i, j] = corr(ref_i, gen_j) = [[1,0,0],[0,0,1],[0,1,0]]; own = diag = [1, 0, 0]
    # gen 0 beats refs 1, 2 (0 < 1): 2 wins; gen 1: r[0,1]=0 !< 0, r[2,1]=1 !< 0: 0; gen 2: 0 -> mean 2/3 / (N-1)
    assert two_way_identification(gen, ref) == pytest.approx((2 / 3) / 2)
    # 1 - corr per pair: 0, 1, 1
    assert correlation_distance(gen, ref) == pytest.approx(2 / 3)
    assert correlation_matrix(ref, gen) == pytest.approx(np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]), abs=1e-12)


def test_two_way_of_unrelated_pairs_is_chance():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 50))
    shuffled = ref[rng.permutation(300)]
    assert two_way_identification(shuffled, ref) == pytest.approx(0.5, abs=0.03)


def test_two_way_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal N"):
        two_way_identification(np.zeros((3, 2)), np.zeros((4, 2)))


# -- n-way top-k ----------------------------------------------------------------------------------------------------
def test_nway_planted_logit_gives_one_and_buried_gives_zero():
    probs = np.full((5, 100), 0.1)
    true = np.arange(5) * 7
    planted = probs.copy()
    planted[np.arange(5), true] = 0.9
    assert nway_topk_accuracy(planted, true, n_way=50, top_k=1, trials=20).tolist() == [[1.0]] * 5
    buried = np.random.default_rng(0).uniform(0.2, 1.0, (5, 100))
    buried[np.arange(5), true] = 0.0
    assert nway_topk_accuracy(buried, true, n_way=50, top_k=1, trials=20).max() == 0.0


def test_nway_all_classes_is_deterministic_rank():
    probs = np.array([[0.1, 0.4, 0.3, 0.2]])  # true class 2 ranks second
    assert nway_topk_accuracy(probs, np.array([2]), n_way=4, top_k=1, trials=5)[0, 0] == 0.0
    assert nway_topk_accuracy(probs, np.array([2]), n_way=4, top_k=2, trials=5)[0, 0] == 1.0
    # ties go to the true class (it is first in the reference code's candidate list)
    assert nway_topk_accuracy(np.array([[0.5, 0.5]]), np.array([0]), n_way=2, trials=3)[0, 0] == 1.0


def test_nway_two_way_expectation_and_seeding():
    probs = np.array([[0.1, 0.4, 0.3, 0.2]])  # 2-way for class 2: loses only when the distractor is class 1 -> 2/3
    acc = nway_topk_accuracy(probs, np.array([2]), n_way=2, trials=3000, seed=3)[0, 0]
    assert acc == pytest.approx(2 / 3, abs=0.03)
    assert nway_topk_accuracy(probs, np.array([2]), n_way=2, trials=3000, seed=3)[0, 0] == acc


def test_nway_mean_and_max_over_samples():
    good = np.array([0.9, 0.05, 0.05])
    bad = np.array([0.0, 0.5, 0.5])
    acc = nway_topk_accuracy(np.array([[good, bad]]), np.array([0]), n_way=3, trials=4)
    assert acc.tolist() == [[1.0, 0.0]]  # mean 0.5, max 1


def test_nway_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_way"):
        nway_topk_accuracy(np.zeros((1, 3)), np.array([0]), n_way=4)
    with pytest.raises(ValueError, match="true_class"):
        nway_topk_accuracy(np.zeros((2, 3)), np.array([0]), n_way=2)


# -- DreamDiffusion pair-wise identification ------------------------------------------------------------------------
def test_pairwise_identification_by_hand():
    scores = np.array([[0.9, 0.5, 0.95], [0.1, 0.2, 0.3], [0.0, 0.0, 0.7]])
    # larger better: row 0 beats 0.5 only (1/2), row 1 beats 0.1 (1/2), row 2 beats both (1) -> 2/3
    assert pairwise_identification(scores, larger_is_better=True) == pytest.approx(2 / 3)
    # smaller better: row 0 beats 0.95 (1/2), row 1 beats 0.3 (1/2), row 2 none (0) -> 1/3
    assert pairwise_identification(scores, larger_is_better=False) == pytest.approx(1 / 3)


def test_score_matrices_match_direct_definitions():
    g, r = images(3, seed=0), images(4, seed=1)
    mse = np.array([[((gi.astype(float) - rj.astype(float)) ** 2).mean() for rj in r] for gi in g])
    assert mse_matrix(g, r) == pytest.approx(mse)
    pcc = np.array([[np.corrcoef(gi.ravel(), rj.ravel())[0, 1] for rj in r] for gi in g])
    assert correlation_matrix(g, r) == pytest.approx(pcc)
    sk = np.array([[structural_similarity(gi, rj, data_range=255, channel_axis=-1) for rj in r] for gi in g])
    assert ssim_matrix(g, r) == pytest.approx(sk, abs=1e-9)


def test_pairwise_metrics_identical_images_score_one_and_skip_lpips_without_weights(tmp_path):
    x = images(5)
    metrics, skipped = pairwise_metrics(
        x[:, None],
        x,
        ["pairwise_mse", "pairwise_pcc", "pairwise_ssim", "pairwise_lpips"],
        16,
        {"arch": "alexnet", "path": str(tmp_path / "none.pth")},
        device=None,
    )
    assert metrics == {"eval/pairwise_mse": 1.0, "eval/pairwise_pcc": 1.0, "eval/pairwise_ssim": 1.0}
    assert "none.pth" in skipped["eval/pairwise_lpips"] and "allow_download" in skipped["eval/pairwise_lpips"]


# -- retrieval ------------------------------------------------------------------------------------------------------
def test_retrieval_by_hand():
    img = np.eye(4)
    eeg = np.array([[1.0, 0, 0, 0], [0.9, 1.0, 0, 0], [1.0, 0, 0.5, 0], [0, 0, 0, -1.0]])
    # eeg0 -> own image most similar; eeg1 -> own (1.0) > img0 (0.9); eeg2 -> img0 beats own: rank 2;
    # eeg3 -> own is the least similar of the 4: rank 4
    out = retrieval_topk(eeg, img, ks=(1, 2, 4))
    assert out == {1: 0.5, 2: 0.75, 4: 1.0}
    assert retrieval_topk(eeg, img, targets=np.array([0, 1, 0, 3]), ks=(1,))[1] == 0.75


def test_retrieval_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        retrieval_topk(np.zeros((2, 3)), np.zeros((2, 4)))


# -- FID / IS -------------------------------------------------------------------------------------------------------
def test_frechet_distance_by_hand():
    gen = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean (1, 1), covariance 4/3 I
    assert frechet_distance_from_features(gen, gen) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance_from_features(gen, gen + [3.0, 0.0]) == pytest.approx(9.0, abs=1e-6)
    # 2x: mean (2, 2), cov 16/3 I -> |(1,1)|^2 + 2 * (4/3 + 16/3 - 2 * 8/3) = 2 + 8/3
    assert frechet_distance_from_features(gen, 2 * gen) == pytest.approx(2 + 8 / 3, abs=1e-6)


def test_inception_score_by_hand():
    confident = np.array([[50.0, 0.0], [0.0, 50.0]] * 2)  # p(y|x) one-hot, p(y) uniform -> exp(log 2) = 2
    mean, std = inception_score_from_logits(confident, splits=1)
    assert mean == pytest.approx(2.0, abs=1e-6)
    assert inception_score_from_logits(np.zeros((6, 5)), splits=2)[0] == pytest.approx(1.0)


# -- region alignment -----------------------------------------------------------------------------------------------
def test_region_alignment_by_hand():
    ref = np.array([[[0, 1, 1], [0, 2, 2]]])
    gen = np.array([[[[0, 1, 2], [0, 2, 2]], [[0, 1, 1], [0, 2, 2]]]])  # sample 0 off by one pixel, sample 1 exact
    out = region_alignment(gen, ref, num_labels=3)
    # sample 0: IoU label 1 = 1/2, label 2 = 2/3; foreground acc 3/4. sample 1: 1 and 1
    assert out["eval/region_alignment_miou"] == pytest.approx(((0.5 + 2 / 3) / 2 + 1) / 2)
    assert out["eval/region_alignment_acc"] == pytest.approx((0.75 + 1) / 2)
    with pytest.raises(ValueError, match="reference_maps"):
        region_alignment(gen, ref[:, :1], num_labels=3)
