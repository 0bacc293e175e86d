"""Invariant 1, nothing is skipped: a tailing reader never misses or reorders a position.

Eight appenders commit batches with random pauses *inside* their transactions (after drawing
positions, before committing), which is exactly when PostgreSQL, without the log's table lock,
would let a later position commit and become visible before an earlier one.
"""

from __future__ import annotations

import random
import threading
import time

from sqlalchemy.engine import Engine

from helpers import published
from pubsub_cache.events.db import write_transaction
from pubsub_cache.events.log import EventLog

APPENDERS = 8
BATCHES_EACH = 12


def test_tailing_reader_sees_every_position_once_in_order(engine: Engine) -> None:
    log = EventLog(engine, lock_timeout=30)
    committed: list[int] = []
    committed_lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def appender(number: int) -> None:
        rng = random.Random(number)
        try:
            for batch in range(BATCHES_EACH):
                events = [published(f"{number}-{batch}-{i}") for i in range(rng.randint(1, 5))]
                with write_transaction(engine) as connection:
                    positions = log.append_in(connection, events)
                    time.sleep(rng.uniform(0, 0.02))
                with committed_lock:
                    committed.extend(positions)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    seen: list[int] = []

    def reader() -> None:
        reader_log = EventLog(engine)
        after = 0
        try:
            while True:
                finished = done.is_set()
                for record in reader_log.read(after=after, limit=50):
                    seen.append(record.position)
                    after = record.position
                if finished and after >= reader_log.head():
                    return
                reader_log.wait(after=after, timeout=0.05)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader_log.close()

    tail = threading.Thread(target=reader)
    tail.start()
    workers = [threading.Thread(target=appender, args=(n,)) for n in range(APPENDERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    tail.join(timeout=60)
    log.close()

    assert not errors, errors
    assert seen == sorted(seen), "the reader saw positions out of order"
    assert len(seen) == len(set(seen)), "the reader saw a position twice"
    assert sorted(committed) == seen, "the reader missed committed positions"
