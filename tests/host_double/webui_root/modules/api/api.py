"""A18 modules/api/api.py: Api(app, queue_lock) whose add_api_route adds Depends(self.auth) only when
--api-auth is set (:199-207,273-283), /sdapi/v1/progress (:593-619) and /sdapi/v1/interrupt (:640-643);
decode_base64_to_image (:77-99, HTTPException 500 on bad input), encode_pil_to_base64 (raw base64)."""

import base64
import io
from secrets import compare_digest

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image

from modules import shared


def decode_base64_to_image(encoding):
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        return Image.open(io.BytesIO(base64.b64decode(encoding)))
    except Exception as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def encode_pil_to_base64(image):
    with io.BytesIO() as output_bytes:
        image.save(output_bytes, format="PNG")
        return base64.b64encode(output_bytes.getvalue())


class Api:
    def __init__(self, app, queue_lock):
        self.credentials = {}
        if shared.cmd_opts.api_auth:
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password
        self.app = app
        self.queue_lock = queue_lock
        self.add_api_route("/sdapi/v1/progress", self.progressapi, methods=["GET"])
        self.add_api_route("/sdapi/v1/interrupt", self.interruptapi, methods=["POST"])

    def add_api_route(self, path, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    def progressapi(self, skip_current_image: bool = False):
        state = shared.state
        if state.job_count == 0:
            return {"progress": 0, "eta_relative": 0, "state": state.dict(), "textinfo": state.textinfo}
        progress = 0.01
        if state.job_count > 0:
            progress += state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += 1 / max(state.job_count, 1) * state.sampling_step / state.sampling_steps
        return {"progress": min(progress, 1), "eta_relative": 0, "state": state.dict(),
                "textinfo": state.textinfo}

    def interruptapi(self):
        shared.state.interrupt()
        return {}
