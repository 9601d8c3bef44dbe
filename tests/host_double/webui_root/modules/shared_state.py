"""A18 modules/shared_state.py:12-135 (State). SD.Next's begin is begin(title="", api=None) (SDN
modules/shared_state.py:132), so begin(job=...) is a TypeError there, as in the real host."""

import threading
import time

from modules import devices, flavor_is


class State:
    def __init__(self):
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_image = None
        self.id_live_preview = 0
        self.textinfo = None
        self.time_start = None
        self.server_start = time.time()
        self.begun = []  # (job, thread name) per begin(): tests check who called it
        self._lock = threading.Lock()

    def interrupt(self):
        self.interrupted = True

    def assign_current_image(self, image):  # A18 shared_state.py:164
        self.current_image = image
        self.id_live_preview += 1

    def skip(self):
        self.skipped = True

    def stop_generating(self):
        self.stopping_generation = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def dict(self):
        return {"skipped": self.skipped, "interrupted": self.interrupted,
                "stopping_generation": self.stopping_generation, "job": self.job, "job_count": self.job_count,
                "job_timestamp": self.job_timestamp, "job_no": self.job_no, "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps}

    def _begin(self, job):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
        self.current_image = None
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        self.begun.append((job, threading.current_thread().name))
        devices.torch_gc()

    if flavor_is("sdnext"):
        def begin(self, title="", api=None):
            self._begin(title)
    else:
        def begin(self, job: str = "(unknown)"):
            self._begin(job)

    def end(self):
        self.job = ""
        self.job_count = 0
        devices.torch_gc()
