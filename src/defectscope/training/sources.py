"""The three sets of a run: fit (trains), selection (chooses), validation (measures).

The selection set is carved from the training split (stratified, seeded, duplicates kept
together; :mod:`defectscope.data.splits`): early stopping, the best epoch, the operating point and
the "unknown" threshold are chosen on it. The validation split is only measured, at the end, so
the reported figure is not a selected one. ``splits.csv`` in the run folder lists every image's
set.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.atomic_io import atomic_write_text
from defectscope.core.errors import RunFolderError
from defectscope.core.spreadsheet import safe_row
from defectscope.data.pipeline import DataSource, open_source
from defectscope.data.splits import holdout, too_small
from defectscope.data.subsets import split_items, subset
from defectscope.training.config import TrainConfig

log = logging.getLogger("defectscope.train")


@dataclass(frozen=True)
class RunSources:
    fit: DataSource
    selection: DataSource
    validation: DataSource

    @property
    def classes(self) -> list[str]:
        return list(self.fit.classes)

    def describe(self) -> dict:
        """What chose and what measured, for metrics.json."""
        same = self.selection.split == self.validation.split
        return {
            "selected_on": f"{self.selection.split} ({self.selection.num_examples} images)",
            "measured_on": f"{self.validation.split} ({self.validation.num_examples} images)",
            "selection_is_validation": same,
        }


def open_run_sources(config: TrainConfig) -> RunSources:
    """Open both splits and carve the selection set from the training split."""
    train = open_source(config.data, config.train_split)
    validation = open_source(config.data, config.val_split)
    if train.classes != validation.classes:
        raise RunFolderError(
            f"{config.data}: classes differ between {config.train_split} "
            f"{list(train.classes)} and {config.val_split} {list(validation.classes)}"
        )
    if config.selection_fraction == 0:
        log.warning("selection_fraction 0: choosing on the validation split, which is reported")
        return RunSources(train, validation, validation)
    items = split_items(train)
    for name, count in too_small(items, minimum=3).items():
        log.warning("class %r has %d training images: none held out to select on", name, count)
    held = holdout(items, config.selection_fraction, config.seed)
    fit = subset(train, {i.key for i in items} - held, f"{config.train_split}-fit")
    selection = subset(train, held, "selection")
    log.info(
        "%d training images: %d fit, %d select (%.0f%%, stratified); %d %s images measure",
        len(items),
        fit.num_examples,
        selection.num_examples,
        100 * config.selection_fraction,
        validation.num_examples,
        config.val_split,
    )
    return RunSources(fit, selection, validation)


def write_splits(sources: RunSources, path: Path) -> None:
    """``splits.csv``: source id, class and set of every image of the run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source_id", "class", "set"])
    for name, source in (
        ("fit", sources.fit),
        ("selection", sources.selection),
        ("validation", sources.validation),
    ):
        if name == "selection" and sources.describe()["selection_is_validation"]:
            continue
        for item in split_items(source):
            writer.writerow(safe_row([item.key, item.label, name]))
    atomic_write_text(path, buffer.getvalue())
