"""MappingNet: a 27-frame window of 3DMM coefficients -> head-pose bins, translation, keypoint deltas."""

from __future__ import annotations

from torch import Tensor, nn

DESCRIPTOR_NC = 1024
NUM_LAYERS = 3
NUM_KP = 15
NUM_BINS = 66


class MappingNet(nn.Module):
    """``(B, coeff_nc, 27) -> dict(yaw, pitch, roll (B, 66) logits, t (B, 3), exp (B, 45))``, raw outputs.

    ``coeff_nc`` is 70 (exp 64 + pose 6; crop/extcrop/resize) or 73 (+ 3 crop parameters; full/extfull).
    Valid dilated convolutions shrink the window 27 -> 21 -> 15 -> 9 -> 3 with centre-cropped residuals.
    """

    def __init__(self, coeff_nc: int = 70):
        super().__init__()
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, DESCRIPTOR_NC, kernel_size=7))
        for i in range(NUM_LAYERS):
            encoder = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(DESCRIPTOR_NC, DESCRIPTOR_NC, 3, dilation=3))
            self.add_module(f"encoder{i}", encoder)
        self.fc_roll = nn.Linear(DESCRIPTOR_NC, NUM_BINS)
        self.fc_pitch = nn.Linear(DESCRIPTOR_NC, NUM_BINS)
        self.fc_yaw = nn.Linear(DESCRIPTOR_NC, NUM_BINS)
        self.fc_t = nn.Linear(DESCRIPTOR_NC, 3)
        self.fc_exp = nn.Linear(DESCRIPTOR_NC, 3 * NUM_KP)

    def forward(self, coeffs: Tensor) -> dict[str, Tensor]:
        out = self.first(coeffs)
        for i in range(NUM_LAYERS):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = out.mean(dim=2)
        return {"yaw": self.fc_yaw(out), "pitch": self.fc_pitch(out), "roll": self.fc_roll(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}
