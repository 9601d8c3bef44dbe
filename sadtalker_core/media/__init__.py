"""Files in and out: pictures (``image_io``), the bundled ffmpeg (``ffmpeg_io``), video reading and the
streaming encoder with the sound muxed in (``video``), provenance tags, content credentials and the
watermark (``provenance``)."""
