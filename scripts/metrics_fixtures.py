"""Writes tests/fixtures/metrics.json: scikit-learn's metrics on small random multi-label scores,
for tests/metrics.rs to compare against.

Scores are float32 values (so Rust reads exactly the numbers sklearn saw), rounded to a coarse
grid in some classes so that ties are common. Each case has a class with no positives, and the
"small" case also one with no negatives and one scored backwards (no threshold beats chance).

Run: /work/venv-torch/bin/python scripts/metrics_fixtures.py   (numpy, scikit-learn)
"""

import json
import math
import pathlib

import numpy as np
import sklearn
from sklearn import metrics

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metrics.json"


def finite_or_none(values):
    return [None if not math.isfinite(v) else float(v) for v in values]


def make_case(rng, rows, classes, grid):
    labels = (rng.random((rows, classes)) < 0.3).astype(np.int64)
    labels[:, 1] = 0  # no positives: AUROC undefined
    noise = rng.random((rows, classes))
    scores = 0.6 * noise + 0.4 * labels * rng.random((rows, classes))
    for c, step in enumerate(grid):
        if step:
            scores[:, c] = np.round(scores[:, c] / step) * step  # heavy ties
    scores = np.clip(scores, 0.001, 0.999).astype(np.float32).astype(np.float64)
    return scores, labels


def class_entry(y, s):
    entry = {"positives": int(y.sum()), "negatives": int(len(y) - y.sum())}
    both = 0 < y.sum() < len(y)
    entry["auroc"] = float(metrics.roc_auc_score(y, s)) if both else None
    entry["average_precision"] = float(metrics.average_precision_score(y, s)) if y.sum() > 0 else None
    if both:
        for drop in (False, True):
            fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=drop)
            key = "roc_dropped" if drop else "roc_full"
            entry[key] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": finite_or_none(thr)}
        fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=False)
        j = int(np.argmax(tpr - fpr))
        entry["youden"] = {"index": j, "threshold": finite_or_none([thr[j]])[0], "tpr": tpr[j], "fpr": fpr[j]}
    return entry


def decisions(labels, scores, thresholds):
    pred = (scores >= np.asarray(thresholds)[None, :]).astype(np.int64)
    p, r, f, support = metrics.precision_recall_fscore_support(labels, pred, average=None, zero_division=0)
    cms = metrics.multilabel_confusion_matrix(labels, pred)  # [[tn, fp], [fn, tp]] per class
    return {
        "thresholds": list(map(float, thresholds)),
        "precision": p.tolist(),
        "recall": r.tolist(),
        "f1": f.tolist(),
        "support": support.tolist(),
        "confusion": [{"tp": int(m[1, 1]), "fp": int(m[0, 1]), "tn": int(m[0, 0]), "fn": int(m[1, 0])} for m in cms],
        "hamming_loss": float(metrics.hamming_loss(labels, pred)),
        "subset_accuracy": float(metrics.accuracy_score(labels, pred)),
    }


def case(name, seed, rows, classes, grid, backwards=False, all_positive=False):
    rng = np.random.default_rng(seed)
    scores, labels = make_case(rng, rows, classes, grid)
    if all_positive:
        labels[:, 2] = 1  # no negatives: AUROC undefined
    if backwards:
        scores[:, 3] = np.where(labels[:, 3] == 1, 0.2, 0.7).astype(np.float32)  # inverted
    per_class = [class_entry(labels[:, c], scores[:, c]) for c in range(classes)]
    thresholds = rng.uniform(0.2, 0.8, classes).astype(np.float32).astype(np.float64)
    return {
        "name": name,
        "rows": rows,
        "classes": classes,
        "scores": scores.reshape(-1).tolist(),
        "labels": labels.reshape(-1).tolist(),
        "per_class": per_class,
        "at_half": decisions(labels, scores, [0.5] * classes),
        "at_list": decisions(labels, scores, thresholds),
    }


def main():
    cases = [
        case("small", 1, 40, 5, [0.1, None, 0.05, None, None], backwards=True, all_positive=True),
        case("ties", 2, 120, 4, [0.25, None, 0.1, 0.02]),
        case("larger", 3, 400, 6, [None, None, 0.01, None, 0.05, None]),
    ]
    doc = {"generator": f"scripts/metrics_fixtures.py, scikit-learn {sklearn.__version__}", "cases": cases}
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
