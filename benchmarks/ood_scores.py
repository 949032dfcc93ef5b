"""Which out-of-distribution score separates "unknown" images best? AUROC of each, one table.

    python benchmarks/ood_scores.py --run RUN --data NEU_TFRECORDS [--other X-SDD]

For a trained run, computes pooled features and probabilities of: the run's selection set
(fits nothing, only the table's threshold column), the validation split (in distribution), and
out-of-distribution sets: another dataset (--other, e.g. X-SDD: a different steel process), the
validation images under heavy blur and under heavy noise (severity 5 of the project's
corruptions), and generated non-steel images (flat frames, gradients, colour noise, checkers).
Needs a model that outputs logits (defectscope 0.2 and later). Scores (higher = more unusual):
1 - max softmax probability, energy (-logsumexp of the logits),
and the Mahalanobis distance of the pooled features to the nearest class mean (class means and
a shrunk shared covariance fitted on the run's fit set). Prints AUROC per score and set, and
the share of each set flagged at the threshold that keeps 95% of the selection set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.splits import holdout
from defectscope.data.subsets import split_items, subset
from defectscope.evaluation.corruptions import corrupt
from defectscope.evaluation.ood import MahalanobisScorer, energy_scores, msp_scores
from defectscope.inference.classifier import load_model
from defectscope.inference.scores import softmax
from defectscope.models.xception import FEATURES_NAME


def feature_model(classifier):
    import keras

    model = classifier.backend.model
    return keras.Model(model.input, [model.get_layer(FEATURES_NAME).output, model.output])


def run_images(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits (the model's output)."""
    features, logits = [], []
    for images in batches:
        f, out = model(images, training=False)
        features.append(np.asarray(f))
        logits.append(np.asarray(out))
    return np.concatenate(features), np.concatenate(logits)


def source_batches(source, classifier, corruption: str | None = None):
    dataset = create_dataset(source, image_size=classifier.image_size, batch_size=32)
    for index, (images, _) in enumerate(dataset):
        yield corrupt(images, corruption, 5, (5, index)).numpy() if corruption else images.numpy()


def generated_batches(size: int, count: int = 160, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        kind = index % 4
        if kind == 0:  # a blank frame of one grey level
            image = np.full((size, size, 3), rng.uniform(0, 255))
        elif kind == 1:  # a smooth colour gradient
            ramp = np.linspace(0, 1, size)[None, :, None] * rng.uniform(0, 255, 3)
            image = np.broadcast_to(ramp, (size, size, 3)) + rng.uniform(0, 60)
        elif kind == 2:  # colour noise
            image = rng.uniform(0, 255, (size, size, 3))
        else:  # a checkerboard
            cells = (np.indices((size, size)).sum(axis=0) // int(rng.integers(4, 40))) % 2
            image = np.repeat(cells[:, :, None], 3, axis=2) * 255.0
        images.append(np.clip(image, 0, 255).astype(np.float32))
    for start in range(0, count, 32):
        yield np.stack(images[start : start + 32])


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(labels, np.r_[inside, outside]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the run's data")
    parser.add_argument("--other", type=Path, help="another dataset root (out of distribution)")
    parser.add_argument("--selection-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import_tensorflow_quietly()
    classifier = load_model(args.run)
    model = feature_model(classifier)
    train = open_source(args.data, "train")
    items = split_items(train)
    held = holdout(items, args.selection_fraction, args.seed)
    fit = subset(train, {i.key for i in items} - held, "fit")
    selection = subset(train, held, "selection")
    validation = open_source(args.data, "validation")
    sets = {"fit": run_images(model, source_batches(fit, classifier))}
    sets["selection"] = run_images(model, source_batches(selection, classifier))
    sets["validation (in)"] = run_images(model, source_batches(validation, classifier))
    if args.other:
        other = open_source(args.other, "train")
        other_val = open_source(args.other, "validation")
        features = [run_images(model, source_batches(s, classifier)) for s in (other, other_val)]
        sets[f"{args.other.name} (other steel)"] = tuple(
            np.concatenate(parts) for parts in zip(*features, strict=True)
        )
    for name in ("gaussian_blur", "shot_noise"):
        sets[f"validation, {name} 5"] = run_images(
            model, source_batches(validation, classifier, name)
        )
    sets["generated non-steel"] = run_images(model, generated_batches(classifier.image_size))

    fit_features, fit_logits = sets["fit"]
    scorer = MahalanobisScorer.fit(fit_features, fit_logits.argmax(1))
    scores = {
        "1 - max softmax": lambda f, z: msp_scores(softmax(z)),
        "energy": lambda f, z: energy_scores(z),
        "Mahalanobis": lambda f, z: scorer.scores(f),
    }
    print(f"\nrun {args.run}; {len(sets['fit'][0])} fit, {len(sets['selection'][0])} selection")
    header = f"{'set':<32}{'images':>7}" + "".join(f"{n:>28}" for n in scores)
    print(header + "\n" + "-" * len(header))
    inside = {n: fn(*sets["validation (in)"]) for n, fn in scores.items()}
    limits = {n: float(np.quantile(fn(*sets["selection"]), 0.95)) for n, fn in scores.items()}
    for name, (features, probabilities) in sets.items():
        if name in ("fit", "selection"):
            continue
        cells = []
        for score_name, fn in scores.items():
            values = fn(features, probabilities)
            flagged = float(np.mean(values > limits[score_name]))
            area = (
                ""
                if name == "validation (in)"
                else f"AUROC {auroc(inside[score_name], values):.3f}, "
            )
            cells.append(f"{area}{flagged:.0%} flagged")
        print(f"{name:<32}{len(features):>7}" + "".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
