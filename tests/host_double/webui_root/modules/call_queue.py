"""A18 modules/call_queue.py:7-117 (SD.Next: a plain threading.Lock, SDN modules/call_queue.py:7-60).
wrap_gradio_gpu_call: task id from args[0] when it is "task(...)", state.begin/end under queue_lock,
res = list(func(...)), "Time taken" appended to res[-1], errors -> extra_outputs + [error html], flags reset."""

import html
import threading
import time
import traceback

from modules import devices, flavor_is, fifo_lock, progress, shared

queue_lock = threading.Lock() if flavor_is("sdnext") else fifo_lock.FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            res = func(*args, **kwargs)
        return res

    return f


def _wrap_gradio_gpu_call(func, extra_outputs=None):
    def f(*args, **kwargs):
        if args and type(args[0]) == str and args[0].startswith("task(") and args[0].endswith(")"):
            id_task = args[0]
            progress.add_task_to_queue(id_task)
        else:
            id_task = None
        with queue_lock:
            shared.state.begin(id_task or "(unknown)")  # positional: job= on A1111, title= on SD.Next
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            finally:
                progress.finish_task(id_task)
            shared.state.end()
        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


# name= exists only on SD.Next (SDN call_queue.py:18); on A1111 1.8-1.10 and Forge it is a TypeError
if flavor_is("sdnext"):
    def wrap_gradio_gpu_call(func, extra_outputs=None, name=None):
        return _wrap_gradio_gpu_call(func, extra_outputs)
else:
    def wrap_gradio_gpu_call(func, extra_outputs=None):
        return _wrap_gradio_gpu_call(func, extra_outputs)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        t = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            traceback.print_exc()
            shared.state.job = ""
            shared.state.job_count = 0
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            error_message = f"{type(e).__name__}: {e}"
            res = extra_outputs_array + [f"<div class='error'>{html.escape(error_message)}</div>"]
        devices.torch_gc()
        shared.state.skipped = False
        shared.state.interrupted = False
        shared.state.stopping_generation = False
        shared.state.job_count = 0
        if not add_stats:
            return tuple(res)
        elapsed = time.perf_counter() - t
        res[-1] += f"<div class='performance'><p class='time'>Time taken: <wbr><span class='measurement'>" \
                   f"{elapsed:.1f} sec.</span></p></div>"
        return tuple(res)

    return f
