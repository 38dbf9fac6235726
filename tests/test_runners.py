"""The segment tasks' media slots (``tasks.runners``): one per core, a freed one to the lowest segment index."""

from __future__ import annotations

import threading
import time

from prefect_modify_video.tasks.runners import OrderedSlots


def _wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_freed_media_slot_goes_to_the_lowest_segment_index_waiting_then_to_who_came_first():
    slots = OrderedSlots(1)
    holding, release = threading.Event(), threading.Event()
    served: list[str] = []

    def first_holder():
        with slots.held(0):
            holding.set()
            release.wait(10)

    def waiter(order: int, label: str):
        with slots.held(order):
            served.append(label)

    threads = [threading.Thread(target=first_holder)]
    threads[0].start()
    assert holding.wait(10)
    for count, (order, label) in enumerate([(7, "7"), (3, "3a"), (9, "9"), (3, "3b"), (1, "1")], start=1):
        thread = threading.Thread(target=waiter, args=(order, label))
        thread.start()
        threads.append(thread)
        _wait_until(lambda: slots.waiting == count)
    release.set()
    for thread in threads:
        thread.join(10)
    assert served == ["1", "3a", "3b", "7", "9"]
    assert slots.waiting == 0


def test_media_slots_let_as_many_holders_in_at_once_as_they_have_slots_and_no_more():
    slots = OrderedSlots(3)
    inside = peak = 0
    lock = threading.Lock()

    def work(order: int):
        nonlocal inside, peak
        with slots.held(order):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work, args=(i % 4,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak == 3 and inside == 0 and slots.waiting == 0
    with slots.held(), slots.held(), slots.held():  # all three free again
        assert slots.waiting == 0
