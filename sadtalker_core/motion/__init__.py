"""Speech to motion: the driving audio as mel windows (``audio``), then expression, head pose and blinks as
3DMM coefficients per frame (``coeffs``)."""
