"""Run the default training recipe for several seeds and print accuracy, macro F1 and time.

    python benchmarks/train_recipe.py [--data TFRECORDS_OR_ROOT] [--seeds 0,1,2] [--config default]

Each seed is a full `defectscope train` (phase 1 on cached features, phase 2 fine-tuning, then
evaluation on the validation split) into runs/bench-seed<N>. The feature cache is shared by
the seeds, so its cost is paid once and reported in the first row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _paths import add_data_arguments

from defectscope.training.config import resolve_config
from defectscope.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--config", default="default")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        out = args.runs / f"bench-{args.config}-seed{seed}"
        config = resolve_config(
            args.config, data=str(args.data), out=str(out), weights=str(args.weights), seed=seed
        )
        started = time.perf_counter()
        result = train(config)
        minutes = (time.perf_counter() - started) / 60
        state = json.loads((out / "state.json").read_text())
        rows.append((seed, result.metrics, minutes, state))
    print(f"\nrecipe: {args.config}  data: {args.data}  cores: {os.cpu_count()}")
    columns = ("seed", 5), ("accuracy", 10), ("errors", 8), ("macro F1", 10), ("minutes", 9)
    columns += ("head acc", 10), ("phase-1 speed-up", 18)
    print("".join(f"{name:>{width}}" for name, width in columns))
    for seed, metrics, minutes, state in rows:
        speedup = state.get("head_speedup") or float("nan")
        print(
            f"{seed:>5}{metrics['accuracy']:>10.4f}{metrics['num_errors']:>8}{metrics['macro_f1']:>10.4f}"
            f"{minutes:>9.1f}{state['head_validation_accuracy']:>10.4f}{speedup:>17.0f}x"
        )


if __name__ == "__main__":
    main()
