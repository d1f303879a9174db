"""The replicas' pure parts: WAL positions, and how a replica's lag is measured."""

import pytest

from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.adapters.postgres.replica_monitor import PrimaryWal
from marketdata.adapters.postgres.replicas import ReplicaSet, lsn_of, lsn_text


def test_wal_positions_read_as_numbers() -> None:
    assert lsn_of("0/3000000") == 0x3000000
    assert lsn_of("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn_of("16/B374D848") > lsn_of("15/FFFFFFFF")
    assert lsn_text(lsn_of("16/B374D848")) == "16/B374D848"
    for bad in ("", "16", "/1", "1/", "x/1"):
        with pytest.raises(ValueError, match="not a WAL position"):
            lsn_of(bad)


def test_lag_is_the_time_since_the_primary_had_what_the_replica_lacks() -> None:
    wal = PrimaryWal(keep=60)
    assert wal.lag(100, now=0, replay_age=None) is None  # the primary never sampled
    wal.note(0.0, 100)
    wal.note(1.0, 200)
    wal.note(2.0, 200)  # unchanged: the first time it was seen counts
    wal.note(3.0, 300)
    assert wal.lag(300, now=10, replay_age=None) == 0  # has all: no lag however old
    assert wal.lag(250, now=10, replay_age=None) == 7  # lacks what appeared at 3.0
    assert wal.lag(200, now=10, replay_age=None) == 7
    assert wal.lag(150, now=10, replay_age=None) == 9  # lacks what appeared at 1.0


def test_an_idle_primary_makes_no_replica_late() -> None:
    wal = PrimaryWal(keep=60)
    wal.note(0.0, 100)
    # an hour without a write; the replica's last replayed commit is an hour old
    assert wal.lag(100, now=3600, replay_age=3600) == 0


def test_lag_beyond_the_samples_kept_takes_the_replica_s_own_estimate() -> None:
    wal = PrimaryWal(keep=10)
    wal.note(0.0, 100)
    wal.note(5.0, 200)
    wal.note(20.0, 300)  # the samples of 0.0 and 5.0 are dropped
    assert wal.lag(300, now=21, replay_age=None) == 0
    assert wal.lag(250, now=21, replay_age=None) == 1  # at least since the oldest sample
    assert wal.lag(250, now=21, replay_age=16) == 16  # its last replayed commit is older


def test_no_replicas_means_every_read_on_the_primary() -> None:
    replicas = ReplicaSet([], DatabaseConfig(url="postgresql://u@127.0.0.1:1/x"))
    assert not replicas.configured
    assert replicas.reader(0) is None
    assert replicas.status() == []


async def test_no_replicas_waits_for_nothing() -> None:
    replicas = ReplicaSet([], DatabaseConfig(url="postgresql://u@127.0.0.1:1/x"))
    await replicas.open()
    try:
        assert await replicas.reader_within(0, 10) is None  # at once (the test's timeout)
    finally:
        await replicas.close()
