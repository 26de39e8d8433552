"""Batches cut in a background thread while the current step trains (:class:`Prefetch`)."""

from __future__ import annotations

import queue
import threading


class Prefetch:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead, so that cutting the
    next batch overlaps the current step (numpy and torch release the GIL for the heavy parts).
    The order is unchanged. :meth:`close` stops the thread early."""

    _END = object()

    def __init__(self, iterable, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterable,), daemon=True, name="m2cofs-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterable) -> None:
        try:
            for item in iterable:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((self._END, exc))
            return
        self._put((self._END, None))

    def __iter__(self):
        return self

    def __next__(self):
        item, exc = self._q.get()
        if item is self._END:
            self._thread.join()
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
