"""The export encoder: chunks of binary columns as Arrow record batches, in the order asked
for even if a chunk's rows came otherwise."""

import struct
from datetime import UTC, datetime

import pyarrow.ipc as ipc

from marketdata.adapters.columnar_export import ColumnarEncoder
from marketdata.domain.ports import Columnar

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def chunk(minutes: list[int]) -> tuple[object, ...]:
    micros = [m * 60_000_000 for m in minutes]
    prices = [float(m) for m in minutes]
    return (
        len(minutes),
        struct.pack(f">{len(micros)}q", *micros),
        *(struct.pack(f">{len(prices)}d", *prices) for _ in range(5)),
        struct.pack(f">{len(minutes)}q", *minutes),
    )


def decoded(encoder: ColumnarEncoder, chunks: list[tuple[object, ...]]) -> list[dict[str, object]]:
    body = b"".join(encoder.add(c) for c in chunks) + encoder.finish()
    return ipc.open_stream(body).read_all().to_pylist()


def test_rows_out_of_order_in_a_chunk_are_put_back_in_order() -> None:
    ascending = decoded(ColumnarEncoder(Columnar.ARROW, "X", 1, False, False), [chunk([3, 1, 2])])
    assert [r["openint"] for r in ascending] == [1, 2, 3]
    assert [r["close"] for r in ascending] == [1.0, 2.0, 3.0]  # whole rows move together
    assert ascending[0]["ts"] == datetime(2000, 1, 1, 0, 1, tzinfo=UTC)
    descending = decoded(
        ColumnarEncoder(Columnar.ARROW, "X", 1, False, False, descending=True), [chunk([2, 3, 1])]
    )
    assert [r["openint"] for r in descending] == [3, 2, 1]


def test_rows_in_order_are_kept_and_constant_columns_filled() -> None:
    rows = decoded(
        ColumnarEncoder(Columnar.ARROW, "X.US", 5, False, False), [chunk([1, 2]), chunk([3])]
    )
    assert [(r["ticker"], r["tf_min"], r["openint"]) for r in rows] == [
        ("X.US", 5, 1),
        ("X.US", 5, 2),
        ("X.US", 5, 3),
    ]
