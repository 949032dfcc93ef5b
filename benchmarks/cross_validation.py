"""K-fold cross-validation of a training recipe on a folder-per-class dataset: one table.

    python benchmarks/cross_validation.py --data X-SDD [--folds 5] [--weights W] [--work DIR]

Each fold is the validation split once (stratified, duplicates kept in one fold, seed 0); the
other folds train, with the recipe's own selection set carved from them. Prints, per fold and
as mean +- standard deviation: validation accuracy, balanced accuracy, macro F1, the head alone
(phase 1) and the minutes of the whole `train`. No figure is chosen on the fold it reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _paths import DEFAULT_WEIGHTS

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.layout import SplitPlan
from defectscope.data.tfrecord_writer import convert_dataset
from defectscope.training.config import resolve_config
from defectscope.training.trainer import train

COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "head_validation_accuracy")


def run_fold(args, fold: int, work: Path) -> dict:
    records = work / f"fold{fold}-records"
    run = work / f"fold{fold}"
    if not (run / "evaluation" / "metrics.json").is_file():
        if not (records / "manifest.json").is_file():
            plan = SplitPlan(folds=args.folds, fold=fold)
            convert_dataset(args.data, records, num_shards=2, plan=plan, overwrite=True)
        overrides = {"data": str(records), "out": str(run), "weights": str(args.weights)}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        train(resolve_config(args.config, **overrides))
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    state = json.loads((run / "state.json").read_text())
    return {**{k: metrics.get(k) for k in COLUMNS}, "minutes": state["train_seconds"] / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder-per-class dataset")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--config", default="default")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs")
    parser.add_argument("--work", type=Path, default=None, help="keep runs here (else a temp)")
    args = parser.parse_args()
    import_tensorflow_quietly()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        rows = [run_fold(args, fold, work) for fold in range(args.folds)]
    print(f"\n{args.data}: {args.folds}-fold cross-validation, recipe {args.config!r}")
    header = f"{'fold':>5}" + "".join(f"{c:>26}" for c in (*COLUMNS, "minutes"))
    print(header)
    for fold, row in enumerate(rows):
        print(f"{fold:>5}" + "".join(f"{row[c]:>26.4f}" for c in (*COLUMNS, "minutes")))
    means = []
    for column in (*COLUMNS, "minutes"):
        values = [row[column] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        means.append(f"{statistics.mean(values):.4f} +- {spread:.4f}")
    print(f"{'mean':>5}" + "".join(f"{m:>26}" for m in means))


if __name__ == "__main__":
    main()
