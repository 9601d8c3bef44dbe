"""Thin front ends on the pipeline: the CLI, the Gradio UI and REST routes (shared by the WebUI tab and the
standalone app and server), the job runner they share, batch jobs, ``doctor`` and the WebUI's requirements.

Importing this package does nothing (the WebUI's ``install.py`` imports ``host_requirements`` from it with the
standard library only)."""
