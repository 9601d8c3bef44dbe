"""A18 modules/progress.py: task queue bookkeeping and /internal/progress (progressapi formula :76-141;
SD.Next counts only sampling_step / sampling_steps)."""

import time

from modules import flavor_is, shared

current_task = None
pending_tasks = {}
finished_tasks = []
recorded_results = []


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)
    if len(finished_tasks) > 16:
        finished_tasks.pop(0)


def record_results(id_task, res):
    recorded_results.append((id_task, res))


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


if flavor_is("sdnext"):
    def _progress() -> float:
        # SDN progress.py:62-70: the current stage's steps only; job_no / job_count are ignored
        step = max(shared.state.sampling_step, 0)
        steps = max(shared.state.sampling_steps, 1)
        return round(min(1, abs(step / steps)), 2)
else:
    def _progress() -> float:
        progress = 0
        job_count, job_no = shared.state.job_count, shared.state.job_no
        sampling_steps, sampling_step = shared.state.sampling_steps, shared.state.sampling_step
        if job_count > 0:
            progress += job_no / job_count
        if sampling_steps > 0 and job_count > 0:
            progress += 1 / job_count * sampling_step / sampling_steps
        return min(progress, 1)


def progressapi(req: dict) -> dict:
    id_task = req.get("id_task")
    active = id_task == current_task
    queued = id_task in pending_tasks
    completed = id_task in finished_tasks
    if not active:
        return {"active": active, "queued": queued, "completed": completed, "progress": None, "eta": None,
                "textinfo": "In queue..." if queued else "Waiting..."}
    progress = _progress()
    elapsed = time.time() - (shared.state.time_start or time.time())
    eta = (elapsed / progress - elapsed) if progress > 0 else None
    return {"active": active, "queued": queued, "completed": completed, "progress": progress, "eta": eta,
            "textinfo": shared.state.textinfo}


def setup_progress_api(app):
    from fastapi import Body

    def internal_progress(req: dict = Body(...)):
        return progressapi(req)

    app.add_api_route("/internal/progress", internal_progress, methods=["POST"])
