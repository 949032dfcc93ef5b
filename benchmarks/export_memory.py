"""Peak and held memory of ``export_model`` per format, each export in a fresh process, with
the garbage collection during tf2onnx and without it.

    python benchmarks/export_memory.py                      # a tiny detector on synthetic data
    python benchmarks/export_memory.py --run runs/neu-detect --data ../shared/data/NEU-DET

Without ``--run`` it trains the tests' tiny detector first (random 96 px Xception encoder,
27.5M parameters, one epoch of the heads on a synthetic set; about 20 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _memory_mib() -> tuple[int, int]:
    """(resident now, peak resident) of this process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def export_once(run: Path, data: Path, fmt: str, collect: bool) -> dict:
    """One export into a scratch folder; its seconds, and memory before and after."""
    import defectscope.deploy.export as export

    if not collect:
        export.collecting_garbage = lambda every_seconds: contextlib.nullcontext()
    before, _ = _memory_mib()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        export.export_model(
            run, fmt, Path(scratch) / fmt, data=data, calibration_images=8, parity=False
        )
    held, peak = _memory_mib()
    seconds = time.perf_counter() - started
    return {
        "format": fmt,
        "collect": collect,
        "seconds": seconds,
        "before_mib": before,
        "peak_mib": peak,
        "held_mib": held,
    }


def tiny_detector_run(folder: Path) -> tuple[Path, Path]:
    """The tests' tiny detector (``tests.helpers``), trained on a small synthetic set."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers
    from tests.helpers import tiny_detector_config

    from defectscope.data.synthetic import synthesize_dataset
    from defectscope.training.trainer import train

    data = synthesize_dataset(folder / "synthetic", 4, 2, image_size=64, seed=1)
    return train(tiny_detector_config(data, folder / "run")).run_dir, data


def _child(run: Path, data: Path, fmt: str, collect: bool) -> dict:
    command = [sys.executable, __file__, "--worker", fmt, "--run", str(run), "--data", str(data)]
    if not collect:
        command.append("--no-collect")
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(f"{fmt} export failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train a tiny detector)")
    parser.add_argument("--data", type=Path, help="the run's dataset (calibration images)")
    parser.add_argument("--formats", default="onnx,onnx-int8,tflite-int8")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-collect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(export_once(args.run, args.data, args.worker, not args.no_collect)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        run, data = (args.run, args.data) if args.run else tiny_detector_run(Path(scratch))
        print(f"{'format':<12}{'gc during':>10}{'seconds':>9}{'before':>8}{'peak':>8}{'held':>8}")
        for fmt in args.formats.split(","):
            for collect in (False, True):
                row = _child(run, data, fmt, collect)
                print(
                    f"{fmt:<12}{'yes' if collect else 'no':>10}{row['seconds']:>9.1f}"
                    f"{row['before_mib']:>8}{row['peak_mib']:>8}{row['held_mib']:>8}"
                )
        print("memory in MiB of the exporting process: before the export, its peak, held after")


if __name__ == "__main__":
    main()
