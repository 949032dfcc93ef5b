"""SIGKILL `convert`, `predict --out` and `train` at random moments, then check and rerun.

    python benchmarks/kill_harness.py [--data NEU-DET] [--kills 10] [--train-kills 3]

convert and predict run on the real data (predict over the validation images with a model
trained here from the demo preset); train runs the demo preset on a synthetic set and is resumed
with --resume after every kill. Prints one line per command: kills, problems found after the
kills, and whether the final outputs equal an uninterrupted run's (train: accuracy within 0.3 pp).
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from _paths import add_data_arguments

from defectscope.data.synthetic import synthesize_dataset
from defectscope.reliability import kill_convert, kill_predict, kill_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, weights=False)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--train-kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic = synthesize_dataset(work / "synthetic", 40, 40, seed=args.seed)
        reports = [kill_convert(args.data, work, args.kills, rng)]
        reports.append(kill_train(synthetic, "demo", work, args.train_kills, rng))
        images = sorted((Path(args.data) / "validation" / "images").glob("*"))
        reports.append(kill_predict(work / "train-reference", images, work, args.kills, rng))
    print(f"\n{'command':<16}{'kills':>6}{'problems':>10}  final outputs")
    for report in reports:
        verdict = "identical" if report.identical else "DIFFERENT"
        if report.command.startswith("train"):
            verdict = f"{verdict} quality {report.detail}"
        print(f"{report.command:<16}{report.kills:>6}{len(report.problems):>10}  {verdict}")
        for problem in report.problems:
            print(f"    {problem}")


if __name__ == "__main__":
    main()
