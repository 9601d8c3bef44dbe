"""Coefficients to frames: keypoints and the face renderer in batches (``animate``), optional face restoration
and upscaling (``enhance``), the aspect restore and paste-back into the picture (``paste``)."""
