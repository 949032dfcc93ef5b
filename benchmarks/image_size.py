"""Choose the input size: frozen ImageNet-Xception features at several sizes, one run.

    python benchmarks/image_size.py [--data DATA] [--weights PATH] [--sizes 200,224,299]

For each size: backbone throughput (images/s, forward only, batch 32) and the validation accuracy
of a logistic-regression head (scikit-learn, C=1) on the pooled features. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _paths import add_data_arguments
from sklearn.linear_model import LogisticRegression

from defectscope.data.pipeline import open_source
from defectscope.models.xception import create_feature_extractor, create_model
from defectscope.training.features import extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--sizes", default="200,224,299")
    args = parser.parse_args()
    train, val = open_source(args.data, "train"), open_source(args.data, "validation")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        extractor = create_feature_extractor(
            create_model(len(train.classes), size, str(args.weights))
        )
        started = time.perf_counter()
        x_train, y_train = extract_features(extractor, train, size)
        x_val, y_val = extract_features(extractor, val, size)
        seconds = time.perf_counter() - started
        head = LogisticRegression(C=1.0, max_iter=5000).fit(x_train, y_train)
        accuracy = float((head.predict(x_val) == y_val).mean())
        images = len(y_train) + len(y_val)
        rows.append(
            (size, images / seconds, seconds, accuracy, int((head.predict(x_val) != y_val).sum()))
        )
        print(f"size {size}: {images / seconds:.1f} img/s, val accuracy {accuracy:.4f}", flush=True)
    print(f"\ndata: {args.data}  cores: {os.cpu_count()}")
    print(f"{'size':>6}{'img/s':>10}{'extract s':>12}{'LR val acc':>12}{'errors':>8}")
    for size, rate, seconds, accuracy, errors in rows:
        print(f"{size:>6}{rate:>10.1f}{seconds:>12.0f}{accuracy:>12.4f}{errors:>8}")


if __name__ == "__main__":
    main()
