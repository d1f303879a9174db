"""`marketdata ingest`: candle files through the same import use case as `POST /candles`,
each all or nothing, with a progress bar on a terminal and a summary per file."""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from marketdata.domain.errors import DomainError
from marketdata.domain.imports import CandleImport
from marketdata.domain.ingest import Batch, IngestOptions, Row, Rows, count_of
from marketdata.domain.ports import CandleFile

OpenFile = Callable[[Path, IngestOptions], CandleFile]

_PROGRESS_EVERY = 8192


def _tracked(
    rows: Iterator[Row] | Iterator[Batch],
    file: CandleFile,
    progress: Progress | None,
    task: TaskID | None,
) -> Iterator[Row | Batch]:
    started = time.monotonic()
    count = shown = 0
    for item in rows:
        count += count_of(item)
        if progress is not None and task is not None and count - shown >= _PROGRESS_EVERY:
            shown = count
            rate = count / max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=file.consumed, rate=f"{rate:,.0f} rows/s")
        yield item


@contextmanager
def progress_bar(*columns: ProgressColumn) -> Iterator[Progress | None]:
    """A progress bar on a terminal (None elsewhere: logs and CI get the summaries only)."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *(columns or (MofNCompleteColumn(),)),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        yield progress


async def ingest_files(
    paths: list[Path],
    options: IngestOptions,
    imports: CandleImport,
    open_file: OpenFile,
    *,
    dry_run: bool = False,
) -> int:
    """Load each file in its own transaction; print a summary. Exit status 1 if any failed.
    `dry_run`: every row is read and checked, nothing is written."""
    failed = 0
    totals = [0, 0, 0]
    with progress_bar(DownloadColumn()) as progress:
        for path in paths:
            started = time.monotonic()
            try:
                file = open_file(path, options)
            except OSError as error:
                print(f"marketdata: {path}: {error.strerror}", file=sys.stderr)
                failed += 1
                continue
            task = (
                progress.add_task(path.name, total=file.size, rate="")
                if progress is not None
                else None
            )
            try:
                result = await imports.load(
                    cast(Rows, _tracked(file.rows(), file, progress, task)), dry_run=dry_run
                )
            except DomainError as error:
                print(
                    f"marketdata: {error.message}; nothing of {path} was written",
                    file=sys.stderr,
                )
                failed += 1
                continue
            finally:
                if progress is not None and task is not None:
                    progress.remove_task(task)
            seconds = time.monotonic() - started
            totals = [
                totals[0] + result.rows,
                totals[1] + result.inserted,
                totals[2] + result.updated,
            ]
            print(
                f"{path}: {result.rows:,} rows read, {result.inserted:,} inserted, "
                f"{result.updated:,} updated, {result.unchanged:,} unchanged, 0 rejected "
                f"in {seconds:.2f} s ({result.rows / max(seconds, 1e-9):,.0f} rows/s)"
                + (" [dry run: nothing written]" if dry_run else "")
            )
    if len(paths) > 1:
        print(
            f"total: {len(paths) - failed} of {len(paths)} files loaded, {totals[0]:,} rows "
            f"read, {totals[1]:,} inserted, {totals[2]:,} updated"
        )
    return 1 if failed else 0
