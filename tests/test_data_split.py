"""data/split.py by hand: small pools whose stratified split can be worked out on paper, so that
the rules its docstring states (largest remainder, ties to the lower class; validation quotas from
what the test set left) are pinned, not only "the parts have plausible sizes"."""

from __future__ import annotations

import numpy as np

from nnscratch.data.split import _quotas, split_stratified


def _per_class(labels, rows, num_classes=3):
    return np.bincount(labels[rows], minlength=num_classes).tolist()


def test_quota_ties_go_to_the_lower_class():
    # 5 : 5 of 1 image: both remainders are 0.5, the lower class index wins
    assert _quotas(np.array([5, 5]), 1).tolist() == [1, 0]
    # 3 : 3 : 3 of 2: all remainders 2/3, the two lower classes win
    assert _quotas(np.array([3, 3, 3]), 2).tolist() == [1, 1, 0]
    # a larger remainder beats a lower index: 1 : 3 of 1 (0.25 vs 0.75)
    assert _quotas(np.array([1, 3]), 1).tolist() == [0, 1]


def test_stratified_split_worked_out_by_hand():
    """14 images, classes 0, 1, 2 with 4, 4 and 6 of them.

    test:  n // 7 = 2 images; exact shares 4*2/14 = 0.571, 0.571, 0.857 -> floors 0, 0, 0; the
           2 left go to the largest remainders: class 2, then the tie 0 vs 1 goes to class 0:
           [1, 0, 1].
    validation: of the 12 left, (4-1, 4-0, 6-1) = (3, 4, 5); default size 12 // 6 = 2; shares
           3*2/12 = 0.5, 0.667, 0.833 -> [0, 1, 1]. (Quotas from the raw counts 4, 4, 6 would
           give [1, 0, 1] again, leaving class 1 out of validation.)
    training: the rest, [3, 3, 4].
    """
    labels = np.array([0] * 4 + [1] * 4 + [2] * 6)
    for seed in (0, 1, 2):
        split = split_stratified(labels, 3, None, seed, "hand case")
        assert _per_class(labels, split.test) == [1, 0, 1]
        assert _per_class(labels, split.val) == [0, 1, 1]
        assert _per_class(labels, split.train) == [3, 3, 4]
        every = np.concatenate([split.train, split.val, split.test])
        assert sorted(every.tolist()) == list(range(14))  # each image in exactly one part


def test_an_explicit_validation_size_is_shared_out_of_what_the_test_set_left():
    labels = np.array([0] * 4 + [1] * 4 + [2] * 6)
    split = split_stratified(labels, 3, 4, 0, "hand case")
    # of (3, 4, 5), 4 images: 1.0, 1.333, 1.667 -> floors 1, 1, 1, the one left to class 2
    assert _per_class(labels, split.val) == [1, 1, 2]
