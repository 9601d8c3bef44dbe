"""What each preprocess mode means for the pipeline, stated once.

``crop`` renders the tight face box, ``extcrop`` the face with a margin, ``resize`` the whole picture
squashed to a square; ``full`` / ``extfull`` render like ``crop`` / ``extcrop`` and paste the face back into
the whole picture. The mode names themselves are ``options.PREPROCESS_MODES``.
"""

from __future__ import annotations

#: modes whose rendered face is pasted back into the whole picture (and whose coefficient rows carry the 3
#: crop parameters, 73 values, for the full-mode MappingNet)
PASTE_BACK_MODES = ("full", "extfull")
#: modes whose frame shows the bordered crop box (the face plus a margin) instead of the tight face box
MARGIN_MODES = ("extcrop", "extfull")


def pastes_back(mode: str) -> bool:
    """``full`` / ``extfull``: the rendered face goes back into the original picture."""
    return mode in PASTE_BACK_MODES


def shows_margin(mode: str) -> bool:
    """``extcrop`` / ``extfull``: the frame shows the crop box with its margin around the face."""
    return mode in MARGIN_MODES
