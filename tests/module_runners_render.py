"""Parity runners for kinds kp_detector, mapping_net, generator, he_estimator:
``run(meta, arrays, state_dict, sidecar)``."""

RUNNERS = {}
