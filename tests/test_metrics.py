"""Metrics against values worked out by hand (see comments), padding included."""
import numpy as np
import pytest

from hardymer.metrics import (better, classification_metrics, default_selection_metric,
                                         regression_metrics)


def test_classification_by_hand_with_padding():
    # Two sequences padded to length 4; the padded positions hold label 0 / pred 3 and must
    # not count. Real pairs (label, pred): (0,0) (0,1) (1,1) (2,2) (2,0) (2,2).
    labels = np.array([[0, 0, 1, 0], [2, 2, 2, 0]])
    preds = np.array([[0, 1, 1, 3], [2, 0, 2, 3]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
    m = classification_metrics(labels, preds, mask)
    # WA = 4 correct / 6
    assert m["WA"] == pytest.approx(4 / 6)
    # recalls: class0 1/2, class1 1/1, class2 2/3 -> UA = (0.5 + 1 + 2/3) / 3
    assert m["UA"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    # F1 per class: c0 P=1/2 R=1/2 F=1/2; c1 P=1/2 R=1 F=2/3; c2 P=1 R=2/3 F=4/5
    # weighted by support (2, 1, 3)/6
    assert m["F1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)


def test_classification_padding_changes_result_if_not_masked():
    labels = np.array([[1, 0]])
    preds = np.array([[1, 1]])
    assert classification_metrics(labels, preds, np.array([[1, 0]], bool))["WA"] == 1.0
    assert classification_metrics(labels, preds)["WA"] == 0.5


def test_regression_by_hand_drops_zero_labels_for_all_metrics():
    labels = np.array([[2.0, -1.0, 0.0, 1.5], [-2.0, 0.5, 9.0, 9.0]])
    preds = np.array([[1.0, 0.5, 3.0, 1.0], [-1.0, -0.5, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    m = regression_metrics(labels, preds, mask)
    # kept (label, pred): (2,1) (-1,.5) (1.5,1) (-2,-1) (.5,-.5)  — the 0 label is dropped
    y = np.array([2, -1, 1.5, -2, 0.5])
    p = np.array([1, 0.5, 1, -1, -0.5])
    # signs: y>0 [T F T F T], p>0 [T T T F F] -> 3 of 5 agree
    assert m["ACC"] == pytest.approx(3 / 5)
    # MAE = (1 + 1.5 + .5 + 1 + 1) / 5
    assert m["MAE"] == pytest.approx(5 / 5)
    assert m["Corr"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    # weighted F1 on the binary signs: positives (support 3): P=2/3 R=2/3 F=2/3;
    # negatives (support 2): P=1/2 R=1/2 F=1/2 -> (3*2/3 + 2*1/2)/5
    assert m["F1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 5)


def test_regression_all_zero_labels_is_an_error():
    with pytest.raises(ValueError, match="non-zero"):
        regression_metrics(np.zeros(3), np.ones(3))


def test_selection_direction():
    assert default_selection_metric("classification") == "WA"
    assert default_selection_metric("regression") == "F1"
    assert better("WA", 0.6, 0.5) and not better("WA", 0.4, 0.5)
    assert better("MAE", 0.4, 0.5) and not better("MAE", 0.6, 0.5)
    assert better("WA", 0.1, None)
