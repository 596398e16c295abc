"""A drawn hand MediaPipe's HandLandmarker detects: a flat, skin-toned open hand (palm, four fingers with
knuckle creases, a thumb) on a light background, tilted as a raised hand is. No photograph is needed, so the
tests can run the real model on frames that do contain a hand. Found by trying sizes, angles and backgrounds:
at 120 px per palm width, tilted about 20°, on light grey, the model finds it with handedness score ~0.9."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SKIN = (120, 160, 215)  # BGR
BACKGROUND = (200, 200, 200)


def draw_hand(img: np.ndarray, cx: float, cy: float, scale: float = 120.0, angle_deg: float = -20.0,
              spread: float = 1.3) -> np.ndarray:
    import cv2

    rot = cv2.getRotationMatrix2D((0, 0), angle_deg, 1.0)

    def p(x: float, y: float) -> tuple[int, int]:
        v = rot @ np.array([x, y, 1.0])
        return int(cx + v[0] * scale), int(cy + v[1] * scale)

    palm = np.array([p(-0.45, -0.35), p(0.45, -0.4), p(0.5, 0.35), p(0.3, 0.6), p(-0.3, 0.6), p(-0.5, 0.3)],
                    np.int32)
    cv2.fillPoly(img, [palm], SKIN, cv2.LINE_AA)
    crease = tuple(int(c * 0.8) for c in SKIN)
    fingers = [(-0.36, -0.35, -0.45 * spread, -1.15, 0.17), (-0.12, -0.4, -0.12 * spread, -1.35, 0.18),
               (0.13, -0.4, 0.15 * spread, -1.3, 0.18), (0.36, -0.38, 0.45 * spread, -1.05, 0.16)]
    for x0, y0, x1, y1, w in fingers:
        cv2.line(img, p(x0, y0), p(x1, y1), SKIN, int(w * scale), cv2.LINE_AA)
        cv2.circle(img, p(x1, y1), int(w * scale / 2), SKIN, -1, cv2.LINE_AA)
        for f in (0.45, 0.72):
            xa, ya = x0 + (x1 - x0) * f, y0 + (y1 - y0) * f
            cv2.line(img, p(xa - w / 3, ya), p(xa + w / 3, ya), crease, max(1, int(scale * 0.01)), cv2.LINE_AA)
    cv2.line(img, p(-0.45, 0.3), p(-0.85 * spread, -0.1), SKIN, int(0.2 * scale), cv2.LINE_AA)
    cv2.circle(img, p(-0.85 * spread, -0.1), int(0.1 * scale), SKIN, -1, cv2.LINE_AA)
    return img


def hand_image(width: int = 640, height: int = 480, cx: float = 320, cy: float = 300, **kw) -> np.ndarray:
    import cv2

    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    draw_hand(img, cx, cy, **kw)
    return cv2.GaussianBlur(img, (5, 5), 0)


def blank_image(width: int = 640, height: int = 480) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    return img


def write_video(path: Path, seconds: float = 2.0, fps: int = 30, motion: str = "sway") -> Path:
    """An MJPG .avi of the drawn hand: ``sway`` (sliding slowly side to side), ``flex`` (turning and closing its
    fingers twice a second: a playing gesture), ``still``, or ``none`` (the empty background)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(int(seconds * fps)):
        t = i / fps
        if motion == "sway":
            img = hand_image(cx=320 + 40 * math.sin(2 * math.pi * 0.5 * t), cy=300,
                             angle_deg=-20 + 5 * math.sin(2 * math.pi * 0.7 * t))
        elif motion == "flex":
            s = math.sin(2 * math.pi * 2 * t)
            img = hand_image(angle_deg=-20 + 25 * s, spread=1.3 - 0.4 * max(0.0, s))
        elif motion == "still":
            img = hand_image()
        else:
            img = blank_image()
        writer.write(img)
    writer.release()
    return path
