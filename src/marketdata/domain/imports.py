"""The one way candles are written: files through `marketdata ingest`, bodies through
`POST /candles`, the demo data, deletions through `DELETE /candles`; each through the
CandleWriter port, all or nothing."""

from datetime import datetime

from marketdata.domain.candles import TimeRange, ticker_of, timeframe_of
from marketdata.domain.ingest import Rows, WriteResult, count_of
from marketdata.domain.ports import CandleWriter


class CandleImport:
    def __init__(self, writer: CandleWriter) -> None:
        self._writer = writer

    async def load(self, rows: Rows, *, dry_run: bool = False) -> WriteResult:
        """Write every row (parsed and checked as it is read: a bad one raises BadRow and
        nothing is written). `dry_run`: read and check them all, write nothing."""
        if dry_run:
            return WriteResult(rows=sum(count_of(item) for item in rows), inserted=0, updated=0)
        return await self._writer.write(rows)

    async def delete(self, ticker: str, tf_min: int, start: datetime, end: datetime) -> int:
        """Delete a series' candles with start <= ts <= end; how many were deleted."""
        return await self._writer.delete(
            ticker_of(ticker), timeframe_of(tf_min), TimeRange(start, end)
        )
