"""Draw a :class:`~facedistill.data.synth_model.Face` as a photo (numpy + PIL).

The face is described in a unit square (the aligned crop: eyes at y=0.46, mouth at y=0.69)
and every point goes through one affine map to canvas pixels, so the same drawing code makes
the aligned image (small pose jitter) and the in-the-wild image (large scale, position and
rotation change, clutter), and the landmarks and bounding box follow the same map.
Drawing happens at twice the output resolution and is box-filtered down (anti-aliasing).

Each visual cue's strength comes from the attribute's graded latent (see ``synth_model``), so
cues range from obvious (hat, glasses, beard) to a pixel or two (narrow eyes, pointy nose,
bags under the eyes, high cheekbones).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facedistill.data.synth_model import Face

SUPERSAMPLE = 2
_MOUTH_X = np.linspace(-1.0, 1.0, 11)
Colour = tuple[int, ...]

_HAIR_RGB = {
    "black": ((22, 20, 20), (52, 42, 38)),
    "blond": ((232, 205, 135), (196, 160, 88)),
    "brown": ((118, 74, 42), (150, 102, 60)),
    "gray": ((160, 160, 162), (222, 222, 222)),
}
# Unlabelled natural colours sit between the labelled ones: auburn, very dark brown, dark blond.
_OTHER_HAIR = ((150, 62, 32), (80, 52, 34), (176, 138, 86))
_SKIN_LIGHT, _SKIN_DARK = np.array([242, 208, 182.0]), np.array([92, 58, 38.0])
_SKIN_PALE = np.array([252, 242, 240.0])


def _mix(a: np.ndarray | Colour, b: np.ndarray | Colour, t: float) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) * (1.0 - t) + np.asarray(b, dtype=np.float64) * t


def _rgb(c: np.ndarray | Colour, alpha: float | None = None) -> Colour:
    """Clamp and round a colour (numpy or tuple) to ints, optionally with alpha."""
    vals = c.tolist() if isinstance(c, np.ndarray) else c
    v = tuple(min(255, max(0, int(x + 0.5))) for x in vals[:3])
    return v if alpha is None else (*v, min(255, max(0, int(alpha + 0.5))))


def hair_rgb(colour: str, shade: float) -> np.ndarray:
    if colour == "other":
        return np.asarray(_OTHER_HAIR[min(2, int(shade * 3))], dtype=np.float64)
    lo, hi = _HAIR_RGB[colour]
    return _mix(lo, hi, shade)


class Pen:
    """Draws shapes given in unit-square coordinates through an affine map onto a canvas."""

    def __init__(self, image: Image.Image, matrix: np.ndarray) -> None:
        self.draw = ImageDraw.Draw(image, "RGBA")
        self.m = matrix  # 2x3: unit coords -> canvas pixels
        self.scale = float(math.sqrt(abs(np.linalg.det(matrix[:, :2]))))

    def map(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return pts @ self.m[:, :2].T + self.m[:, 2]

    def _xy(self, pts: np.ndarray) -> list[float]:
        return self.map(pts).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: Colour) -> None:
        self.draw.polygon(self._xy(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: Colour, width: float) -> None:
        self.draw.line(self._xy(pts), fill=fill, width=max(1, round(width * self.scale)),
                       joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour,
                n: int = 20) -> None:
        self.poly(ellipse_pts(cx, cy, rx, ry, n), fill)

    def points(self, pts: np.ndarray, fill: Colour) -> None:
        self.draw.point(self._xy(pts), fill=fill)


@functools.lru_cache(maxsize=256)
def _unit_arc(n: int, start: float, stop: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(start, stop, n, endpoint=(stop - start) < 2 * math.pi - 1e-9)
    c, s = np.cos(t), np.sin(t)
    if power != 1.0:
        c, s = np.sign(c) * np.abs(c) ** power, np.sign(s) * np.abs(s) ** power
    return c, s


def ellipse_pts(cx: float, cy: float, rx: float, ry: float, n: int = 20,
                start: float = 0.0, stop: float = 2 * math.pi, power: float = 1.0) -> np.ndarray:
    """Points on an ellipse arc; ``power`` < 1 squares it off (a superellipse)."""
    c, s = _unit_arc(n, float(start), float(stop), float(power))
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * c
    out[:, 1] = cy + ry * s
    return out


@functools.lru_cache(maxsize=64)
def _unit_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-1:1:complex(0, h), -1:1:complex(0, w)].astype(np.float32)
    return yy, xx


@dataclass
class Geometry:
    """Where the parts of one face lie in the unit square (also gives landmarks and bbox)."""

    cx: float
    cy: float
    rx: float
    ry: float
    taper: float
    eye_y: float
    eye_dx: float
    nose_tip: float
    mouth_y: float
    mouth_w: float
    mouth_lift: float

    @classmethod
    def of(cls, face: Face) -> Geometry:
        ident, lat = face.identity, face.latents
        chub = max(0.0, lat["Chubby"] - 0.3) / 0.7
        oval = lat["Oval_Face"]
        rx = 0.215 + 0.06 * chub - 0.025 * oval + 0.008 * ident.male
        ry = 0.29 + 0.01 * ident.face_len + 0.05 * oval
        smile = lat["Smiling"]
        return cls(
            cx=0.5, cy=0.53, rx=rx, ry=ry,
            taper=0.1 + 0.38 * oval - 0.12 * ident.male - 0.15 * chub,
            eye_y=0.46, eye_dx=0.105 + 0.008 * ident.eye_spacing,
            nose_tip=0.595 + 0.025 * lat["Big_Nose"],
            mouth_y=0.695 + 0.008 * ident.face_len,
            mouth_w=0.07 + 0.05 * smile + 0.016 * lat["Big_Lips"],
            mouth_lift=0.06 * max(0.0, smile - 0.3),
        )  # fmt: skip

    def outline(self, n: int = 40) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        s = np.sin(t)
        k = 1.0 - self.taper * np.clip(s, 0, None) ** 2
        return np.stack([self.cx + self.rx * np.cos(t) * k, self.cy + self.ry * s], axis=1)

    @property
    def chin_y(self) -> float:
        return self.cy + self.ry

    def landmarks(self) -> np.ndarray:
        """CelebA's five points (image-left eye first), unit coords, shape [5, 2]."""
        return np.array([
            [0.5 - self.eye_dx, self.eye_y], [0.5 + self.eye_dx, self.eye_y],
            [0.5, self.nose_tip],
            [0.5 - self.mouth_w, self.mouth_y - self.mouth_lift],
            [0.5 + self.mouth_w, self.mouth_y - self.mouth_lift],
        ])  # fmt: skip

    def face_box(self) -> np.ndarray:
        """Corners of the face region (forehead to chin, ear to ear), unit coords [4, 2]."""
        x0, x1 = self.cx - self.rx - 0.03, self.cx + self.rx + 0.03
        y0, y1 = self.cy - self.ry - 0.02, self.chin_y + 0.02
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _skin(face: Face) -> np.ndarray:
    ident, lat = face.identity, face.latents
    skin = _mix(_SKIN_LIGHT, _SKIN_DARK, ident.skin_tone)
    if lat["Pale_Skin"] > 0.3:
        skin = _mix(skin, _SKIN_PALE, min(1.0, (lat["Pale_Skin"] - 0.3) / 0.5))
    if face.makeup:  # foundation: lighter, warmer
        skin = _mix(skin, (245, 205, 185), 0.12 * lat["Heavy_Makeup"])
    return skin


class PartRandom(dict):
    """One random generator per part of the drawing, all derived from one seed: whether a
    part is drawn never shifts another part's random numbers, so changing one attribute
    changes only its own cue, and the aligned and wild canvases show the same photo."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def __missing__(self, part: str) -> np.random.Generator:
        key = int.from_bytes(part.encode(), "little") % (2**63)
        self[part] = gen = np.random.default_rng(np.random.SeedSequence([self.seed, key]))
        return gen


def draw_person(pen: Pen, face: Face, seed: int) -> Geometry:
    """Draw the whole person; the same ``seed`` gives the same drawing on any canvas."""
    parts = PartRandom(seed)
    ident, lat = face.identity, face.latents
    g = Geometry.of(face)
    skin = _skin(face)
    shadow = skin * 0.8
    hair = hair_rgb(face.hair_colour, ident.hair_shade)
    hair_dark = hair * 0.72
    cx = g.cx

    # long hair behind the head
    long_hair = ident.long_hair and not ident.bald
    if long_hair:
        length = 0.88 + 0.1 * parts["hair"].random()
        n = 14
        ys = np.linspace(0.3, length, n)
        wob = 0.022 * np.sin(ys * 40 + parts["hair"].random() * 6) if ident.hair_texture == "wavy" else 0
        left = np.stack([cx - g.rx - 0.06 - 0.04 * (ys - 0.3) + wob, ys], axis=1)
        right = np.stack([cx + g.rx + 0.06 + 0.04 * (ys - 0.3) - wob, ys], axis=1)[::-1]
        top = ellipse_pts(cx, g.cy - 0.02, g.rx + 0.065, g.ry + 0.07, 12, math.pi, 2 * math.pi)
        pen.poly(np.concatenate([left[::-1], top, right[::-1][::-1]]), _rgb(hair_dark))

    # neck, clothes, tie, necklace
    pen.poly(np.array([[cx - 0.075, 0.72], [cx + 0.075, 0.72], [cx + 0.09, 1.01],
                       [cx - 0.09, 1.01]]), _rgb(shadow))
    cloth = parts["cloth"].integers(20, 235, size=3)
    pen.poly(np.array([[-0.05, 1.05], [-0.02, 0.9], [0.16, 0.85], [cx - 0.08, 0.84],
                       [cx, 0.93 if not face.necktie else 0.88], [cx + 0.08, 0.84],
                       [0.84, 0.85], [1.02, 0.9], [1.05, 1.05]]), _rgb(cloth))
    if face.necktie:
        pen.poly(np.array([[cx - 0.07, 0.835], [cx, 0.875], [cx - 0.04, 0.92]]), (240, 240, 240))
        pen.poly(np.array([[cx + 0.07, 0.835], [cx, 0.875], [cx + 0.04, 0.92]]), (240, 240, 240))
        tie = _rgb(parts["tie"].integers(30, 220, size=3))
        pen.poly(np.array([[cx - 0.025, 0.862], [cx + 0.025, 0.862], [cx + 0.02, 0.897],
                           [cx - 0.02, 0.897]]), tie)
        pen.poly(np.array([[cx - 0.018, 0.897], [cx + 0.018, 0.897], [cx + 0.045, 1.01],
                           [cx - 0.045, 1.01]]), tie)
    if face.necklace:
        metal = _rgb(((226, 190, 80), (205, 205, 215), (245, 242, 232))[int(parts["necklace"].integers(3))])
        arc = ellipse_pts(cx, 0.79, 0.085, 0.075 + 0.02 * parts["necklace"].random(), 9, 0.15, math.pi - 0.15)
        pen.line(arc, metal, 0.02)

    # ears and earrings
    for side in (-1, 1):
        ex = cx + side * (g.rx + 0.004)
        pen.ellipse(ex, 0.49, 0.026, 0.046, _rgb(skin * 0.9), 12)
    # face, double chin, cheeks
    pen.poly(g.outline(), _rgb(skin))
    chub = lat["Double_Chin"]
    if chub > 0.3:
        a = 255 * min(1.0, (chub - 0.3) / 0.5)
        pen.poly(ellipse_pts(cx, g.chin_y - 0.005, 0.09 + 0.03 * chub, 0.045, 14, 0, math.pi),
                 _rgb(skin * 0.82, a))
        pen.line(ellipse_pts(cx, g.chin_y + 0.016, 0.09, 0.03, 9, 0.2, math.pi - 0.2),
                 _rgb(shadow * 0.6, a), 0.024)
    hc = lat["High_Cheekbones"]
    for side in (-1, 1):
        x = cx + side * 0.125
        pen.ellipse(x, 0.59 - 0.07 * hc, 0.06, 0.028, _rgb(skin + 55, 30 + 190 * hc), 14)
        pen.ellipse(x + side * 0.012, 0.645 - 0.05 * hc, 0.05, 0.024,
                    _rgb(shadow * 0.75, 20 + 190 * hc), 12)
        if lat["Rosy_Cheeks"] > 0.25:
            pen.ellipse(x, 0.6, 0.045, 0.03, (226, 90, 110, int(240 * (lat["Rosy_Cheeks"] - 0.25))),
                        14)

    # age: wrinkles fade in below the Young boundary
    age_a = 255 * float(np.clip(1.6 * (0.62 - lat["Young"]), 0.0, 0.85))
    if age_a > 0:
        wr = _rgb(shadow * 0.85, age_a)
        for k in range(3):
            y = 0.32 + 0.025 * k
            pen.line(np.array([[cx - 0.1, y + 0.004], [cx, y], [cx + 0.1, y + 0.004]]), wr, 0.012)
        for side in (-1, 1):
            pen.line(np.array([[cx + side * 0.05, 0.6], [cx + side * 0.085, 0.66],
                               [cx + side * 0.09, 0.71]]), wr, 0.016)
            ox = cx + side * (g.eye_dx + 0.05)
            for dy in (-0.012, 0.0, 0.012):
                pen.line(np.array([[ox, g.eye_y], [ox + side * 0.035, g.eye_y + dy * 1.8]]), wr,
                         0.009)

    # beard, stubble, sideburns (under the mouth and nose)
    beard_col = _rgb(hair_dark if face.hair_colour != "gray" else hair)
    if face.stubble:
        k = 400
        pts = np.stack([parts["stubble"].uniform(cx - g.rx * 0.95, cx + g.rx * 0.95, k),
                        parts["stubble"].uniform(0.6, g.chin_y, k)], axis=1)
        keep = (((pts[:, 0] - cx) / g.rx) ** 2 + ((pts[:, 1] - g.cy) / g.ry) ** 2) < 0.95
        pen.points(pts[keep], _rgb(hair_dark * 0.6, 80 + 170 * lat["5_o_Clock_Shadow"]))
    if face.beard == "full":
        t = np.linspace(0.1, math.pi - 0.1, 18)
        k = 1.0 - g.taper * np.sin(t) ** 2
        jaw = np.stack([cx + (g.rx + 0.008) * np.cos(t) * k, g.cy + (g.ry + 0.02) * np.sin(t)], 1)
        inner = ellipse_pts(cx, g.mouth_y - 0.015, g.mouth_w + 0.035, 0.06, 12, math.pi, 0)
        pen.poly(np.concatenate([jaw, inner]), beard_col)
    if face.beard in ("goatee", "goatee_mustache"):
        pen.poly(np.array([[cx - 0.05, g.mouth_y + 0.025], [cx + 0.05, g.mouth_y + 0.025],
                           [cx + 0.04, g.chin_y - 0.01], [cx, g.chin_y + 0.015],
                           [cx - 0.04, g.chin_y - 0.01]]), beard_col)
    if lat["Sideburns"] > 0.35 and not ident.bald:
        length = 0.05 + 0.09 * lat["Sideburns"]
        for side in (-1, 1):
            x = cx + side * (g.rx - 0.012)
            pen.poly(np.array([[x - 0.014, 0.4], [x + 0.014, 0.4], [x + 0.012, 0.45 + length],
                               [x - 0.012, 0.45 + length]]), beard_col)

    # eyes: bags, shadow, whites, iris, liner
    open_h = 0.032 - 0.026 * lat["Narrow_Eyes"]
    shadow_rgb = np.asarray(((110, 70, 150), (60, 90, 160), (110, 75, 55), (40, 35, 40))
                            [int(parts["eyeshadow"].integers(4))], dtype=np.float64)
    for side in (-1, 1):
        ex = cx + side * g.eye_dx
        if lat["Bags_Under_Eyes"] > 0.2:
            a = 255 * (lat["Bags_Under_Eyes"] - 0.2) / 0.8
            pen.ellipse(ex, g.eye_y + 0.035, 0.046, 0.022,
                        _rgb(_mix(shadow * 0.75, (90, 60, 90), 0.4), a), 12)
        if face.makeup:
            pen.ellipse(ex, g.eye_y - open_h - 0.008, 0.045, 0.02,
                        _rgb(shadow_rgb, 60 + 150 * lat["Heavy_Makeup"]), 14)
        pen.ellipse(ex, g.eye_y, 0.042, open_h, (236, 234, 228), 16)
        pen.ellipse(ex, g.eye_y, min(0.017, open_h * 1.1), min(0.017, open_h * 0.95),
                    _rgb(ident.iris), 10)
        pen.ellipse(ex, g.eye_y, 0.006, 0.006, (10, 10, 10), 8)
        liner = 0.006 + (0.007 * lat["Heavy_Makeup"] if face.makeup else 0.0)
        pen.line(ellipse_pts(ex, g.eye_y, 0.043, open_h, 9, math.pi, 2 * math.pi), (25, 20, 20),
                 liner)

    # eyebrows
    brow = _rgb(hair_dark * (0.8 if face.hair_colour != "blond" else 0.9))
    thick = 0.008 + 0.03 * lat["Bushy_Eyebrows"] + 0.004 * ident.male
    arch = 0.004 + 0.045 * lat["Arched_Eyebrows"]
    by = 0.402 + 0.004 * ident.brow_tilt
    for side in (-1, 1):
        xs = cx + side * np.array([0.045, 0.09, 0.13, 0.16])
        ys = np.array([by + 0.004, by - arch * 0.8, by - arch, by + 0.012])
        pen.line(np.stack([xs, ys], 1), brow, thick)

    # nose
    nw = 0.032 + 0.035 * lat["Big_Nose"] - 0.018 * lat["Pointy_Nose"]
    tip = g.nose_tip
    point = 0.004 + 0.085 * lat["Pointy_Nose"]
    pen.poly(np.array([[cx - 0.013, 0.47], [cx + 0.013, 0.47], [cx + nw, tip],
                       [cx + nw * 0.4, tip + 0.012], [cx, tip + point], [cx - nw * 0.4, tip + 0.012],
                       [cx - nw, tip]]), _rgb(skin * 0.76))
    pen.line(np.array([[cx + 0.004, 0.49], [cx + 0.002, tip - 0.01], [cx, tip + point * 0.8]]),
             _rgb(skin + 55, 40 + 215 * lat["Pointy_Nose"]), 0.012)
    for side in (-1, 1):
        pen.ellipse(cx + side * nw * 0.55, tip + 0.006, 0.009 + 0.006 * lat["Big_Nose"], 0.006,
                    _rgb(shadow * 0.6), 8)

    # mustache
    if face.beard in ("mustache", "goatee_mustache", "full"):
        pen.poly(np.array([[cx - g.mouth_w - 0.012, g.mouth_y - 0.003],
                           [cx - 0.02, g.mouth_y - 0.038], [cx + 0.02, g.mouth_y - 0.038],
                           [cx + g.mouth_w + 0.012, g.mouth_y - 0.003],
                           [cx, g.mouth_y - 0.016]]), beard_col)

    # mouth
    lip_t = 0.006 + 0.034 * lat["Big_Lips"]
    gap = 0.002 + (0.05 * lat["Mouth_Slightly_Open"] if face.mouth_open else 0.004 *
                   lat["Mouth_Slightly_Open"])
    if face.lipstick:
        lip = _rgb(((196, 30, 58), (214, 70, 110), (140, 30, 60), (225, 95, 95))
                   [int(parts["lips"].integers(4))])
    else:
        lip = _rgb(_mix(skin * 0.8, (165, 80, 85), 0.5))
    w, y, lift = g.mouth_w, g.mouth_y, g.mouth_lift
    xs = _MOUTH_X
    centre = y - lift * (xs**2)  # corners lift when smiling
    top = np.stack([cx + w * xs, centre - gap / 2 - lip_t * (1 - xs**2) ** 0.5], 1)
    mid_top = np.stack([cx + w * xs, centre - gap / 2 * (1 - xs**2)], 1)
    mid_bot = np.stack([cx + w * xs, centre + gap / 2 * (1 - xs**2)], 1)
    bot = np.stack([cx + w * xs, centre + gap / 2 + 1.2 * lip_t * (1 - xs**2) ** 0.5], 1)
    if gap > 0.004:
        pen.poly(np.concatenate([mid_top, mid_bot[::-1]]), (45, 15, 20))
        if face.smiling:
            pen.poly(np.concatenate([mid_top[2:9], mid_top[2:9][::-1] + [0, gap * 0.35]]),
                     (238, 236, 226))
    pen.poly(np.concatenate([top, mid_top[::-1]]), lip)
    pen.poly(np.concatenate([mid_bot, bot[::-1]]), lip)

    # hair on the head, then earrings (drops hanging below the lobes, over any side locks)
    _draw_hair(pen, face, g, hair, hair_dark, parts["hair_front"])
    if face.earrings:
        metal = _rgb(((230, 192, 70), (210, 210, 220), (200, 40, 60), (60, 120, 210))
                     [int(parts["earrings"].integers(4))])
        r = 0.02 + 0.01 * parts["earrings"].random()
        for side in (-1, 1):
            ex = cx + side * (g.rx + 0.006)
            pen.ellipse(ex, 0.545 + r, r, r * 1.2, metal, 10)


    # glasses
    if face.glasses:
        frame = _rgb(((15, 15, 15), (90, 60, 35), (170, 170, 180))[int(parts["glasses"].integers(3))])
        for side in (-1, 1):
            ex = cx + side * g.eye_dx
            rim = ellipse_pts(ex, g.eye_y + 0.005, 0.062, 0.045, 20, power=0.6)
            if face.sunglasses:
                pen.poly(rim, (20, 20, 25, 235))
            pen.line(np.concatenate([rim, rim[:1]]), frame, 0.022)
            pen.line(np.array([[ex + side * 0.062, g.eye_y], [cx + side * (g.rx + 0.01),
                                                               g.eye_y - 0.01]]), frame, 0.014)
        pen.line(np.array([[cx - g.eye_dx + 0.062, g.eye_y], [cx, g.eye_y - 0.008],
                           [cx + g.eye_dx - 0.062, g.eye_y]]), frame, 0.016)

    # hat
    hat_rng = parts["hat"]
    if face.hat:
        colour = hat_rng.integers(15, 240, size=3)
        brim_y = 0.255 + 0.03 * hat_rng.random()
        dome = ellipse_pts(cx, brim_y, g.rx + 0.045, 0.2, 14, math.pi, 2 * math.pi)
        pen.poly(np.concatenate([dome, [[cx + g.rx + 0.045, brim_y]]]), _rgb(colour))
        if hat_rng.random() < 0.6:
            pen.ellipse(cx, brim_y, g.rx + 0.15, 0.03, _rgb(colour * 0.8), 18)
        else:
            pen.poly(np.array([[cx - g.rx - 0.04, brim_y - 0.01], [cx + g.rx + 0.04,
                                                                   brim_y - 0.01],
                               [cx + g.rx + 0.02, brim_y + 0.03], [cx - g.rx - 0.02,
                                                                   brim_y + 0.03]]),
                     _rgb(colour * 0.75))

    # occlusion (hand, microphone, another head): nuisance without a label
    occ = parts["occluder"]
    if occ.random() < 0.07:
        ox, oy = occ.uniform(0.25, 0.75), occ.uniform(0.55, 0.95)
        col = _rgb(occ.integers(20, 240, size=3))
        if occ.random() < 0.5:
            pen.ellipse(ox, oy, occ.uniform(0.05, 0.12), occ.uniform(0.05, 0.15), col, 14)
        else:
            w2, h2 = occ.uniform(0.03, 0.1), occ.uniform(0.08, 0.2)
            pen.poly(np.array([[ox - w2, oy - h2], [ox + w2, oy - h2], [ox + w2, oy + h2],
                               [ox - w2, oy + h2]]), col)
    return g


def _draw_hair(pen: Pen, face: Face, g: Geometry, hair: np.ndarray, hair_dark: np.ndarray,
               rng: np.random.Generator) -> None:
    ident, lat = face.identity, face.latents
    cx = g.cx
    if ident.bald:
        # a shine on the scalp and a fringe of short hair above the ears
        pen.ellipse(cx + 0.03, g.cy - g.ry + 0.05, 0.06, 0.025, (255, 255, 255, 55), 12)
        side_col = _rgb(_mix(hair, (150, 150, 150), 0.4), 200)
        for side in (-1, 1):
            x = cx + side * (g.rx - 0.005)
            pen.poly(np.array([[x - 0.02, 0.36], [x + 0.02, 0.36], [x + 0.018, 0.47],
                               [x - 0.018, 0.47]]), side_col)
        return
    rec = lat["Receding_Hairline"]
    hair_y = 0.285 - 0.1 * max(0.0, rec - 0.2)
    notch = 0.085 * max(0.0, rec - 0.3)
    top = ellipse_pts(cx, g.cy, g.rx + 0.022, g.ry + 0.055, 16, math.pi, 2 * math.pi)
    line = np.array([
        [cx + g.rx + 0.022, 0.42], [cx + g.rx - 0.01, 0.36], [cx + 0.13, hair_y + 0.015 - notch],
        [cx + 0.07, hair_y + 0.01], [cx, hair_y], [cx - 0.07, hair_y + 0.01],
        [cx - 0.13, hair_y + 0.015 - notch], [cx - g.rx + 0.01, 0.36], [cx - g.rx - 0.022, 0.42],
    ])  # fmt: skip
    pen.poly(np.concatenate([top, line]), _rgb(hair))
    if face.bangs:
        n = 9
        xs = np.linspace(cx - g.rx + 0.02, cx + g.rx - 0.02, n)
        jag = 0.36 + 0.03 * rng.random(n) + 0.012 * (np.arange(n) % 2)
        fringe = np.concatenate([[[cx - g.rx, 0.3], [cx - g.rx + 0.02, 0.25],
                                  [cx + g.rx - 0.02, 0.25], [cx + g.rx, 0.3]],
                                 np.stack([xs, jag], 1)[::-1]])
        pen.poly(fringe, _rgb(hair))
    # texture: straight strands, wavy strands, or none (plain)
    strand = _rgb(hair_dark if hair.mean() > 90 else hair * 1.6 + 20, 200)
    if ident.hair_texture != "plain":
        wavy = ident.hair_texture == "wavy"
        top_y = g.cy - g.ry - 0.04
        for k in range(-3, 4):  # strands over the crown, down to the hairline
            x0 = cx + k * 0.055 + 0.008 * rng.standard_normal()
            ys = np.linspace(top_y + 0.012 * abs(k), hair_y + 0.02 * abs(k), 6)
            xs = x0 + k * 0.01 * (ys - top_y) / 0.1 + (0.028 * np.sin(ys * 45 + k) if wavy else 0)
            pen.line(np.stack([xs, ys], 1), strand, 0.018)
        if ident.long_hair:  # strands down the long hair at both sides
            ys = np.linspace(0.34, 0.86, 10)
            for side in (-1, 1):
                for j in range(2):
                    xs = cx + side * (g.rx + 0.035 + 0.025 * j + 0.04 * (ys - 0.3))
                    if wavy:
                        xs = xs + 0.03 * np.sin(ys * 35 + j * 2)
                    pen.line(np.stack([xs, ys], 1), strand, 0.018)
    if ident.long_hair and rng.random() < 0.5:  # side locks over the ears
        for side in (-1, 1):
            x = cx + side * (g.rx + 0.01)
            pen.poly(np.array([[x - 0.03, 0.33], [x + 0.03, 0.33], [x + 0.035, 0.72],
                               [x - 0.025, 0.72]]), _rgb(hair))


# -- backgrounds, photometric nuisance, composition ------------------------------------------


@functools.lru_cache(maxsize=64)
def _gradient(width: int, height: int, vertical: bool) -> Image.Image:
    """A 0..255 ramp, top to bottom (vertical) or right to left."""
    ramp = Image.linear_gradient("L")
    if not vertical:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    return ramp.resize((width, height), Image.Resampling.BILINEAR)


def background(width: int, height: int, rng: np.random.Generator, clutter: int) -> Image.Image:
    """A two-colour gradient with ``clutter`` random shapes (at canvas resolution)."""
    c0, c1 = rng.integers(0, 256, size=3).tolist(), rng.integers(0, 256, size=3).tolist()
    img = Image.composite(Image.new("RGB", (width, height), tuple(c1)),
                          Image.new("RGB", (width, height), tuple(c0)),
                          _gradient(width, height, bool(rng.random() < 0.5)))
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(clutter):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        fill = (*(int(v) for v in rng.integers(0, 256, size=3)), int(rng.integers(60, 220)))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=fill, width=max(1, int(w / 10)))
    return img


def photometric(img: Image.Image, face: Face, rng: np.random.Generator, size_ref: int
                ) -> Image.Image:
    """Blur (Blurry's cue, plus mild blur on some negatives), lighting gradient, colour cast,
    contrast and sensor noise, at output resolution."""
    blur = 3.2 * max(0.0, face.latents["Blurry"] - 0.25) * size_ref / 64.0
    if blur > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.array(img, dtype=np.float32)
    h, w = arr.shape[:2]
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = _unit_grid(h, w)
    light = xx * np.float32(math.cos(ang)) + yy * np.float32(math.sin(ang))
    light *= np.float32(rng.uniform(0.0, 0.35))
    light += np.float32(1.0)
    cast = (1.0 + rng.uniform(-0.08, 0.08, size=3)) * rng.uniform(0.8, 1.15)  # colour, gain
    contrast = np.float32(rng.uniform(0.8, 1.15))
    arr *= light[..., None]
    arr *= cast.astype(np.float32)
    mean = arr.mean()
    arr -= mean
    arr *= contrast
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0.0, 5.0))
    arr += noise
    arr += mean + 0.5
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def affine(scale: float, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """2x3 map from unit coords (face centre at 0.5, 0.5) to canvas pixels."""
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.concatenate([rot, (np.asarray(centre) - rot @ [0.5, 0.5])[:, None]], axis=1)


def render_aligned(face: Face, size: int, rng: np.random.Generator, draw_seed: int
                   ) -> tuple[Image.Image, np.ndarray]:
    """The aligned crop (``size`` x ``size``) and its 5 landmarks in output pixels."""
    big = size * SUPERSAMPLE
    canvas = background(big, big, rng, clutter=int(rng.integers(0, 4)))
    s = big * rng.uniform(0.94, 1.06)
    centre = (big / 2 + rng.uniform(-0.03, 0.03) * big, big / 2 + rng.uniform(-0.03, 0.03) * big)
    m = affine(s, rng.uniform(-5.0, 5.0), centre)
    g = draw_person(Pen(canvas, m), face, draw_seed)
    img = canvas.resize((size, size), Image.Resampling.BOX)
    img = photometric(img, face, rng, size)
    marks = (g.landmarks() @ m[:, :2].T + m[:, 2]) / SUPERSAMPLE
    return img, marks


def render_wild(face: Face, size: int, rng: np.random.Generator, draw_seed: int
                ) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """An in-the-wild photo: larger canvas, face at a random scale/position/rotation among
    clutter. Returns the image, the face bbox (x, y, w, h) and the 5 landmarks (pixels)."""
    width = int(round(size * rng.uniform(1.6, 2.6)))
    height = int(round(width * rng.uniform(0.9, 1.3)))
    bw, bh = width * SUPERSAMPLE, height * SUPERSAMPLE
    canvas = background(bw, bh, rng, clutter=int(rng.integers(4, 12)))
    side = min(bw, bh) * rng.uniform(0.4, 0.85)
    cx = rng.uniform(side * 0.4, bw - side * 0.4)
    cy = rng.uniform(side * 0.4, bh - side * 0.4)
    m = affine(side, rng.uniform(-25.0, 25.0), (cx, cy))
    g = draw_person(Pen(canvas, m), face, draw_seed)
    img = canvas.resize((width, height), Image.Resampling.BOX)
    img = photometric(img, face, rng, size)
    corners = (g.face_box() @ m[:, :2].T + m[:, 2]) / SUPERSAMPLE
    x0, y0 = np.clip(corners.min(0), 0, [width - 1, height - 1])
    x1, y1 = np.clip(corners.max(0), 0, [width, height])
    bbox = np.array([x0, y0, x1 - x0, y1 - y0])
    marks = (g.landmarks() @ m[:, :2].T + m[:, 2]) / SUPERSAMPLE
    return img, bbox, marks
