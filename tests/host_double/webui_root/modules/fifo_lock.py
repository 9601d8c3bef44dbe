"""A18 modules/fifo_lock.py: a FIFO lock (threading.Lock + deque of waiter events). Non-reentrant: taking
it twice on one thread deadlocks, as in the host; ``acquire(timeout=...)`` lets tests detect that."""

import collections
import threading


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()
        self._inner_lock = threading.Lock()
        self._pending_threads = collections.deque()
        self.owner = None

    def acquire(self, blocking=True, timeout=-1):
        with self._inner_lock:
            lock_acquired = self._lock.acquire(False)
            if lock_acquired:
                self.owner = threading.get_ident()
                return True
            if not blocking:
                return False
            release_event = threading.Event()
            self._pending_threads.append(release_event)
        if not release_event.wait(None if timeout is None or timeout < 0 else timeout):
            with self._inner_lock:
                if release_event in self._pending_threads:
                    self._pending_threads.remove(release_event)
                    return False
        acquired = self._lock.acquire()
        self.owner = threading.get_ident()
        return acquired

    def release(self):
        with self._inner_lock:
            self.owner = None
            if self._pending_threads:
                release_event = self._pending_threads.popleft()
                release_event.set()
            self._lock.release()

    def locked(self):
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, t, v, tb):
        self.release()
