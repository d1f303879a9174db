"""`marketdata ingest`: files in, through the same all-or-nothing upsert as `POST /candles`."""

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from marketdata.adapters.csv_files import CandleFile
from marketdata.adapters.postgres.pool import (
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)
from marketdata.adapters.postgres.writes import write_rows
from marketdata.domain.errors import DomainError
from marketdata.domain.ingest import IngestOptions, Row, WriteResult

_PROGRESS_EVERY = 8192


def _tracked(
    rows: Iterator[Row], file: CandleFile, progress: Progress | None, task: TaskID | None
) -> Iterator[Row]:
    started = time.monotonic()
    for count, row in enumerate(rows, 1):
        if progress is not None and task is not None and count % _PROGRESS_EVERY == 0:
            rate = count / max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=file.consumed, rate=f"{rate:,.0f} rows/s")
        yield row


async def ingest_files(
    paths: list[Path], options: IngestOptions, config: DatabaseConfig | None
) -> int:
    """Load each file in its own transaction; print a summary. Exit status 1 if any failed.
    `config` None means a dry run: every row is read and checked, nothing is written."""
    failed = 0
    totals = [0, 0, 0]
    show = sys.stderr.isatty()
    progress = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            transient=True,
        )
        if show
        else None
    )
    context: AbstractContextManager[object] = progress if progress is not None else nullcontext()
    conn = await connect(config, "marketdata-ingest") if config is not None else None
    try:
        with context:
            for path in paths:
                started = time.monotonic()
                try:
                    file = CandleFile(path, options)
                except OSError as error:
                    print(f"marketdata: {path}: {error.strerror}", file=sys.stderr)
                    failed += 1
                    continue
                task = (
                    progress.add_task(path.name, total=file.size, rate="")
                    if progress is not None
                    else None
                )
                rows = _tracked(file.rows(), file, progress, task)
                try:
                    if conn is None:
                        result = WriteResult(rows=sum(1 for _ in rows), inserted=0, updated=0)
                    else:
                        assert config is not None
                        async with translated_errors(location_of(config.url), config):
                            result = await write_rows(conn, rows)
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
                    + (" [dry run: nothing written]" if conn is None else "")
                )
    finally:
        if conn is not None:
            await conn.close()
    if len(paths) > 1:
        print(
            f"total: {len(paths) - failed} of {len(paths)} files loaded, {totals[0]:,} rows "
            f"read, {totals[1]:,} inserted, {totals[2]:,} updated"
        )
    return 1 if failed else 0
