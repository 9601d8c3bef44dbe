"""Parity runners for kinds audio2exp, audio2pose, face_recon: ``run(meta, arrays, state_dict, sidecar)``."""

RUNNERS = {}
