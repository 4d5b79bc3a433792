"""The predict and explain plumbing behind ``tunelab predict`` and ``tunelab explain``.

Input records from ``--text``, a ``--file``, stdin lines or image files, in the task's input
fields; and one text's prediction with its explanations, rendered to HTML / PNG. Apart from the
training workflows (``workflows``) because it reads saved models only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from tunelab.data import load_records
from tunelab.data.tagging import read_word_sentences
from tunelab.errors import DataError, TunelabError
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.io import atomic_write, utf8_error
from tunelab.tasks.image_classification import idx_records, image_file_records


def shown_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A prediction record as ``tunelab predict`` prints it: binary inputs (image bytes) left out."""
    return {name: value for name, value in record.items() if not isinstance(value, bytes)}


def _stdin_lines(stdin: Iterable[str]) -> Iterator[str]:
    """Lines of stdin (opened with ``errors="surrogateescape"``); a byte that is not UTF-8 is refused."""
    for number, line in enumerate(stdin, start=1):
        bad = utf8_error(line)
        if bad is not None:
            raise DataError(f"<stdin>:{number}: {bad[1]}")
        yield line


def prediction_records(
    art: Artifact,
    texts: Sequence[str],
    file: Path | None,
    text_column: str | None,
    stdin: Iterable[str],
    tokens: bool = False,
    images: Sequence[Path] = (),
) -> list[dict[str, Any]]:
    """Raw input records from ``--text``, a ``--file`` or stdin lines, in the task's input fields.

    Tasks whose inputs have several fields (e.g. question + context) read them from a table file.
    With ``tokens`` the inputs are pre-split words, for tasks whose ``/v1/predict`` takes ``tokens``
    (token classification): lines split at whitespace, or a CoNLL / JSONL file's sentences; each
    record's ``text`` is then its list of words, tagged as given. Image tasks (input field ``image``)
    read ``images`` (image files) or an idx images ``file``; each record names its ``source``.
    """
    fields = {name: name for name in art.task.input_fields}
    if "image" in fields or images:
        if "image" not in fields:
            raise TunelabError(f"--image: task {art.task.name} takes {', '.join(fields)}, not images")
        if texts or (file is None and not images):
            raise TunelabError(f"task {art.task.name} takes images: give --image files or an idx --file")
        return image_file_records(images) if images else idx_records(cast(Path, file))
    if "text" in fields:
        fields["text"] = text_column or art.columns.text
    if tokens:
        schema = art.task.serve_schema
        if schema is None or "tokens" not in schema.request.model_fields:
            raise TunelabError(f"--tokens: task {art.task.name} takes raw text, not pre-split words; drop it")
        if file is not None and not texts:
            sentences = read_word_sentences(file, text_column or "tokens")
        else:
            sentences = [line.split() for line in (texts or _stdin_lines(stdin)) if line.strip()]
        records: list[dict[str, Any]] = [{"text": words} for words in sentences]
    elif file is not None and not texts:
        records = load_records(file, fields)
    elif len(fields) > 1:
        raise TunelabError(f"task {art.task.name} takes {', '.join(fields)} per input: give a table --file")
    else:
        lines = list(texts) if texts else [line.rstrip("\n") for line in _stdin_lines(stdin) if line.strip()]
        records = [{next(iter(fields)): line} for line in lines]
    if not records:
        raise TunelabError("no input: give --text, --file, or lines on stdin")
    return records


def explain_text(
    model_dir: Path,
    text: str,
    options: Mapping[str, Any],
    html: Path | None = None,
    png: Path | None = None,
) -> dict[str, Any]:
    """``text``'s prediction by a saved model and its explanations; the HTML / PNG renderings written.

    ``options`` are ``inference.explain.explain_one``'s keywords (method, target, word, steps). The
    files are written atomically, so a reader never sees half a page.
    """
    from tunelab.evaluation.explanation_view import explanation_html, explanation_png
    from tunelab.inference.explain import check_method, explain_one
    from tunelab.inference.predict import predict_records

    if not text.strip():
        raise DataError("--text: blank text; give at least one non-space character")
    check_method(options.get("method", "ig"))  # before the model loads
    art = load_artifact(model_dir)
    record = {"text": text}
    [prediction] = predict_records(art, [record], batch_size=1)
    explanations = explain_one(art, record, prediction, **options)
    if html is not None:
        atomic_write(html, explanation_html(text, explanations))
    if png is not None:
        atomic_write(png, explanation_png(explanations))
    return {"text": text, **prediction, "explanations": explanations}
