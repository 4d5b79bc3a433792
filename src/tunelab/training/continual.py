"""The previous task of a continual run: its splits read again from its run record, as this run's features.

Run A's record (``best/tunelab_run.json``) holds its resolved config, task params and seed, so
reading its data files through the task's own reader gives back the exact train/dev/test rows A
saw (the dev split and subsampling are seeded), provided the files are still those A read: their
sha256 in the record is checked first, and the files are read at the absolute paths recorded (a
relative path in A's config would depend on the directory B is started from). They are tokenised
with this run's tokenizer (A's own, since this run starts from A's model) under A's task params,
and their labels take this run's ids, which begin with A's labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.methods.spec import PreviousTask
from tunelab.models.continual import previous_record
from tunelab.models.manifest import check_data_files
from tunelab.tasks.spec import TaskSpec, tokenize_dataset

SPLIT_FILES = ("data.train_file", "data.dev_file", "data.test_file")  # the files its splits are read from


def load_previous(
    task: TaskSpec, run: Path, tokenizer: Any, labels: list[str], collator: Any
) -> PreviousTask:
    """Run ``run``'s splits as features of this run (``labels``: this run's, the previous ones first)."""
    record = previous_record(run)
    assert record.config is not None, "previous_record refuses records without a config"
    params = task.params.model_validate(record.task_params)
    files = {key: file for key, file in record.data_files.items() if key in SPLIT_FILES}
    check_data_files(files, f"continue {run}: its rows are what forgetting is measured on")
    data_cfg = record.config.data.model_copy(
        update={key.removeprefix("data."): Path(file.path) for key, file in files.items()}
    )
    data = task.load_data(data_cfg, params, record.config.train.seed)

    def features(split: Any) -> Any:
        return tokenize_dataset(task, params, tokenizer, split, labels)

    return PreviousTask(
        run=run,
        labels=tuple(record.labels),
        params=params,
        train=features(data.train),
        dev=features(data.dev),
        test=features(data.test) if data.test is not None else None,
        examples={"dev": data.dev, **({"test": data.test} if data.test is not None else {})},
        collator=collator,
    )
