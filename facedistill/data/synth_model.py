"""The generative model behind the synthetic face-attribute dataset: who is in an image.

Sampling is split in two levels, as in CelebA:

* an :class:`Identity` holds the traits that belong to a person (sex, age, face shape, nose,
  lips, eyes, eyebrows, skin, natural hair colour and texture, baldness, beard style,
  glasses-wearer, plus identity-only nuisance such as eye spacing or iris colour);
* a :class:`Face` is one photo of that identity: the per-image attributes (smile, open mouth,
  glasses on, hat, jewellery, tie, makeup, lipstick, blur, bangs, stubble, rosy cheeks, ...),
  rare flips of identity traits, and the 40 binary labels.

Each attribute has a *graded* latent in [0, 1] that drives its visual cue. Positives and
negatives share a band of latent values around 0.5 whose width is the attribute's
``overlap``: inside it the cue alone cannot tell the label, as with CelebA's subjective
annotations. Obvious attributes (hat, glasses) have no overlap; subtle ones (narrow eyes,
pointy nose, high cheekbones) a wide one. "Attractive" is drawn from a logistic function of
other visible traits plus a hidden per-identity term.

The conditional probabilities below were chosen so that the marginals land on CelebA's
prevalence (``facedistill.attributes.CELEBA_PREVALENCE``); a test checks them on samples.
Numpy only: the generator needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facedistill.attributes import ATTRIBUTES

# Width of the ambiguous band of each attribute's latent (0 = the cue decides the label).
OVERLAP: dict[str, float] = {
    "Big_Nose": 0.15, "Pointy_Nose": 0.2, "Big_Lips": 0.15, "Narrow_Eyes": 0.15,
    "Bushy_Eyebrows": 0.15, "Arched_Eyebrows": 0.15, "Bags_Under_Eyes": 0.2, "Chubby": 0.1,
    "Double_Chin": 0.15, "Oval_Face": 0.2, "Pale_Skin": 0.1, "High_Cheekbones": 0.2,
    "Young": 0.1, "Receding_Hairline": 0.15, "Rosy_Cheeks": 0.15, "Heavy_Makeup": 0.15,
    "5_o_Clock_Shadow": 0.1, "Blurry": 0.1, "Sideburns": 0.1, "Smiling": 0.05,
    "Mouth_Slightly_Open": 0.05,
}  # fmt: skip
# (v2: bands halved from v1, which a 5-epoch demo teacher could not get past 79% mean
# balanced accuracy on; see benchmarks/teacher_synth.py)

_FLIP = 0.03  # chance that an identity trait reads differently on one photo

HAIR_COLOURS = ("black", "blond", "brown", "gray", "other")


def graded(rng: np.random.Generator, positive: bool, overlap: float) -> float:
    """A latent in [0, 1]: positives uniform on [0.5 - overlap/2, 1], negatives on
    [0, 0.5 + overlap/2]."""
    half = overlap / 2.0
    return float(rng.uniform(0.5 - half, 1.0) if positive else rng.uniform(0.0, 0.5 + half))


def _p(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _p_flippable(rng: np.random.Generator, p: float) -> bool:
    """Draw a trait that :func:`sample_face` flips with chance ``_FLIP`` per photo, so that
    its prevalence over photos is ``p``."""
    return _p(rng, max(0.0, (p - _FLIP) / (1.0 - 2.0 * _FLIP)))


@dataclass
class Identity:
    """Traits fixed for a person (with rare per-image flips applied in :func:`sample_face`)."""

    male: bool
    age: float  # years; Young = age < 37
    skin_tone: float  # 0 light .. 1 dark
    pale: bool
    hair_colour: str  # one of HAIR_COLOURS (gray/other are natural colours too)
    hair_shade: float  # position within the colour's range, 0..1
    hair_texture: str  # "straight" | "wavy" | "plain"
    long_hair: bool
    bald: bool
    receding: bool
    beard: str  # "none" | "full" | "goatee" | "mustache" | "goatee_mustache"
    sideburns: bool
    big_nose: bool
    pointy_nose: bool
    big_lips: bool
    narrow_eyes: bool
    bushy_brows: bool
    arched_brows: bool
    bags: bool
    chubby: bool
    double_chin: bool
    oval: bool
    cheekbone_type: bool  # propensity for High_Cheekbones
    glasses_wearer: bool
    attract: float  # hidden component of Attractive
    # identity-only nuisance (no label): what makes two photos of one person look alike
    eye_spacing: float
    face_len: float
    iris: tuple[int, int, int]
    brow_tilt: float
    latents: dict[str, float] = field(default_factory=dict)


YOUNG_AGE = 37.0


def sample_identity(rng: np.random.Generator) -> Identity:
    male = _p(rng, 0.42)
    young = _p(rng, 0.71 if male else 0.83)
    age = float(rng.uniform(18.0, YOUNG_AGE) if young else rng.uniform(YOUNG_AGE, 75.0))
    old = not young
    bald = male and _p(rng, 0.12 if old else 0.02)
    gray = not bald and _p(rng, 0.15 if old else 0.01)
    if bald:
        colour = "other"
    elif gray:
        colour = "gray"
    else:
        probs = [0.30, 0.04, 0.18] if male else [0.23, 0.25, 0.235]  # black, blond, brown
        u = rng.random()
        colour = "other"
        for name, p in zip(("black", "blond", "brown"), probs, strict=True):
            if u < p:
                colour = name
                break
            u -= p
    wavy_p, straight_p = (0.19, 0.23) if male else (0.43, 0.21)
    u = rng.random()
    texture = "wavy" if u < wavy_p else "straight" if u < wavy_p + straight_p else "plain"
    receding = not bald and _p(
        rng, (0.35 if old else 0.10) if male else (0.10 if old else 0.02)
    )
    beard = "none"
    if male and _p(rng, 0.44):
        u = rng.random()
        beard = (
            "full" if u < 0.51 else "goatee" if u < 0.72 else "mustache" if u < 0.86
            else "goatee_mustache"
        )  # fmt: skip
    chubby = _p(rng, 0.10 if male else 0.03)
    ident = Identity(
        male=male,
        age=age,
        skin_tone=float(rng.beta(2.0, 3.0)),
        pale=_p(rng, 0.02 if male else 0.055),
        hair_colour=colour,
        hair_shade=float(rng.random()),
        hair_texture="plain" if bald else texture,
        long_hair=_p(rng, 0.08 if male else 0.85),
        bald=bald,
        receding=receding,
        beard=beard,
        sideburns=male and _p(rng, 0.30 if beard != "none" else 0.05),
        big_nose=_p_flippable(rng, 0.44 if male else 0.08),
        pointy_nose=_p_flippable(rng, 0.17 if male else 0.36),
        big_lips=_p_flippable(rng, 0.185 if male else 0.28),
        narrow_eyes=_p_flippable(rng, 0.12),
        bushy_brows=_p_flippable(rng, 0.25 if male else 0.06),
        arched_brows=_p_flippable(rng, 0.06 if male else 0.42),
        bags=_p_flippable(rng, 0.41 if old else 0.14),
        chubby=chubby,
        double_chin=_p(rng, 0.45 if chubby else 0.025),
        oval=not chubby and _p_flippable(rng, 0.17 if male else 0.37),
        cheekbone_type=_p(rng, 0.55),
        glasses_wearer=_p(rng, 0.17 if male else 0.10),
        attract=float(rng.normal()),
        eye_spacing=float(rng.uniform(-1, 1)),
        face_len=float(rng.uniform(-1, 1)),
        iris=tuple(int(v) for v in rng.integers(20, 120, size=3)),  # type: ignore[arg-type]
        brow_tilt=float(rng.uniform(-1, 1)),
    )
    for name, flag in (
        ("Big_Nose", ident.big_nose), ("Pointy_Nose", ident.pointy_nose),
        ("Big_Lips", ident.big_lips), ("Narrow_Eyes", ident.narrow_eyes),
        ("Bushy_Eyebrows", ident.bushy_brows), ("Arched_Eyebrows", ident.arched_brows),
        ("Bags_Under_Eyes", ident.bags), ("Chubby", ident.chubby),
        ("Double_Chin", ident.double_chin), ("Oval_Face", ident.oval),
        ("Pale_Skin", ident.pale), ("Receding_Hairline", ident.receding),
        ("Sideburns", ident.sideburns),
    ):  # fmt: skip
        ident.latents[name] = graded(rng, flag, OVERLAP[name])
    return ident


@dataclass
class Face:
    """One photo: the identity, its per-image state, every cue's latent and the 40 labels."""

    identity: Identity
    labels: dict[str, bool]
    latents: dict[str, float]
    hair_colour: str
    beard: str
    glasses: bool
    sunglasses: bool
    hat: bool
    earrings: bool
    necklace: bool
    necktie: bool
    makeup: bool
    lipstick: bool
    rosy: bool
    bangs: bool
    stubble: bool
    smiling: bool
    mouth_open: bool
    blurry: bool

    def label_vector(self) -> np.ndarray:
        """The 40 labels as int8 in {0, 1}, CelebA column order."""
        return np.array([self.labels[name] for name in ATTRIBUTES], dtype=np.int8)


def sample_face(ident: Identity, rng: np.random.Generator) -> Face:
    """Draw one photo of ``ident``: per-image attributes, rare flips, labels and latents."""
    male, young = ident.male, ident.age < YOUNG_AGE
    lat = dict(ident.latents)

    def flip(name: str, flag: bool) -> bool:
        if _p(rng, _FLIP):
            flag = not flag
            lat[name] = graded(rng, flag, OVERLAP[name])
        return flag

    smiling = _p(rng, 0.43 if male else 0.52)
    mouth_open = _p(rng, 0.70 if smiling else 0.27)
    high_cheek = _p(
        rng, (0.95 if smiling else 0.35) if ident.cheekbone_type else (0.45 if smiling else 0.03)
    )
    makeup = (not male) and _p(rng, 0.67)
    lipstick = (_p(rng, 0.97 if makeup else 0.45)) if not male else _p(rng, 0.005)
    rosy = _p(rng, (0.14 if makeup else 0.05) if not male else 0.01)
    glasses = ident.glasses_wearer and _p(rng, 0.55)
    hat = _p(rng, 0.05)
    beard = ident.beard
    if beard != "none" and _p(rng, _FLIP):  # shaved for this photo
        beard = "none"
    stubble = male and beard != "full" and _p(rng, 0.33)
    bangs = (not ident.bald) and _p(rng, 0.055 if male else 0.22)
    face = Face(
        identity=ident,
        labels={},
        latents=lat,
        hair_colour=ident.hair_colour,
        beard=beard,
        glasses=glasses,
        sunglasses=glasses and _p(rng, 0.2),
        hat=hat,
        earrings=_p(rng, 0.025 if male else 0.31),
        necklace=_p(rng, 0.015 if male else 0.195),
        necktie=male and _p(rng, 0.165),
        makeup=makeup,
        lipstick=lipstick,
        rosy=rosy,
        bangs=bangs,
        stubble=stubble,
        smiling=smiling,
        mouth_open=mouth_open,
        blurry=_p(rng, 0.05),
    )
    for name, flag in (
        ("Smiling", smiling), ("Mouth_Slightly_Open", mouth_open),
        ("High_Cheekbones", high_cheek), ("Heavy_Makeup", makeup), ("Rosy_Cheeks", rosy),
        ("5_o_Clock_Shadow", stubble), ("Blurry", face.blurry),
    ):  # fmt: skip
        lat[name] = graded(rng, flag, OVERLAP[name])
    # Young's latent follows age: 0 at 75, 1 at 18, 0.5 at the label boundary.
    lat["Young"] = float(
        0.5 + 0.5 * (YOUNG_AGE - ident.age) / (YOUNG_AGE - 18.0)
        if young else 0.5 - 0.5 * (ident.age - YOUNG_AGE) / (75.0 - YOUNG_AGE)
    )  # fmt: skip

    big_nose = flip("Big_Nose", ident.big_nose)
    pointy = flip("Pointy_Nose", ident.pointy_nose)
    big_lips = flip("Big_Lips", ident.big_lips)
    narrow = flip("Narrow_Eyes", ident.narrow_eyes)
    bushy = flip("Bushy_Eyebrows", ident.bushy_brows)
    arched = flip("Arched_Eyebrows", ident.arched_brows)
    bags = flip("Bags_Under_Eyes", ident.bags)
    oval = flip("Oval_Face", ident.oval) and not ident.chubby
    sideburns = ident.sideburns and not ident.bald
    colour = ident.hair_colour

    # Attractive: a learned function of what the picture shows, plus a hidden identity term.
    score = (
        0.95 * ident.attract
        + 1.1 * young
        - 1.2 * ident.chubby
        - 0.6 * bags
        - 0.5 * ident.double_chin
        + (0.9 * makeup + 0.4 * lipstick + 0.3 * (not big_nose)) * (not male)
        + 0.4 * oval
        + 0.3 * smiling
        - 0.4 * face.blurry
        - 0.3 * (beard == "full")
        - 0.9 * ident.bald
        + (0.5 * (face.hair_colour == "blond") - 0.3 * ident.receding)
        - 1.55
    )
    attractive = _p(rng, float(1.0 / (1.0 + np.exp(-1.6 * score))))
    lat["Attractive"] = float(1.0 / (1.0 + np.exp(-score)))

    labels = {
        "5_o_Clock_Shadow": stubble,
        "Arched_Eyebrows": arched,
        "Attractive": attractive,
        "Bags_Under_Eyes": bags,
        "Bald": ident.bald,
        "Bangs": bangs,
        "Big_Lips": big_lips,
        "Big_Nose": big_nose,
        "Black_Hair": colour == "black",
        "Blond_Hair": colour == "blond",
        "Blurry": face.blurry,
        "Brown_Hair": colour == "brown",
        "Bushy_Eyebrows": bushy,
        "Chubby": ident.chubby,
        "Double_Chin": ident.double_chin,
        "Eyeglasses": glasses,
        "Goatee": beard in ("goatee", "goatee_mustache"),
        "Gray_Hair": colour == "gray",
        "Heavy_Makeup": makeup,
        "High_Cheekbones": high_cheek,
        "Male": male,
        "Mouth_Slightly_Open": mouth_open,
        "Mustache": beard in ("mustache", "goatee_mustache"),
        "Narrow_Eyes": narrow,
        "No_Beard": beard == "none",
        "Oval_Face": oval,
        "Pale_Skin": ident.pale,
        "Pointy_Nose": pointy,
        "Receding_Hairline": ident.receding,
        "Rosy_Cheeks": rosy,
        "Sideburns": sideburns,
        "Smiling": smiling,
        "Straight_Hair": ident.hair_texture == "straight",
        "Wavy_Hair": ident.hair_texture == "wavy",
        "Wearing_Earrings": face.earrings,
        "Wearing_Hat": hat,
        "Wearing_Lipstick": lipstick,
        "Wearing_Necklace": face.necklace,
        "Wearing_Necktie": face.necktie,
        "Young": young,
    }
    face.labels = {k: bool(v) for k, v in labels.items()}
    return face


# Attributes whose cue is drawn from a graded latent alone (strength 0..1).
_LATENT_ONLY = (
    "Arched_Eyebrows", "Bags_Under_Eyes", "Big_Lips", "Big_Nose", "Blurry", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "High_Cheekbones", "Narrow_Eyes", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Young",
)  # fmt: skip
_FLAGS = {
    "Eyeglasses": "glasses", "Wearing_Hat": "hat", "Wearing_Earrings": "earrings",
    "Wearing_Necklace": "necklace", "Wearing_Necktie": "necktie",
    "Wearing_Lipstick": "lipstick", "Bangs": "bangs",
}  # fmt: skip
_FLAG_AND_LATENT = {
    "Heavy_Makeup": "makeup", "5_o_Clock_Shadow": "stubble", "Smiling": "smiling",
    "Mouth_Slightly_Open": "mouth_open",
}  # fmt: skip


def with_attribute(face: Face, name: str, value: bool) -> Face:
    """A copy of ``face`` in which attribute ``name`` is clearly ``value`` and nothing else
    changes (used to show and test each attribute's cue). ``Attractive`` has no cue of its
    own: it is a function of the other traits, so only its label changes."""
    import copy

    new = copy.deepcopy(face)
    ident, lat = new.identity, new.latents
    strong = 0.95 if value else 0.05
    if name in _LATENT_ONLY:
        lat[name] = strong
        if name == "Young":
            ident.age = 22.0 if value else 65.0
        elif name == "Chubby":
            ident.chubby = value
        elif name == "Double_Chin":
            ident.double_chin = value
    elif name in _FLAGS:
        setattr(new, _FLAGS[name], value)
    elif name in _FLAG_AND_LATENT:
        setattr(new, _FLAG_AND_LATENT[name], value)
        lat[name] = strong
    elif name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        ident.bald = False
        new.hair_colour = name.split("_")[0].lower() if value else "other"
    elif name == "Bald":
        ident.bald = value
        ident.hair_texture = "plain" if value else ident.hair_texture
        new.bangs = new.bangs and not value
    elif name in ("Straight_Hair", "Wavy_Hair"):
        ident.bald = False
        ident.hair_texture = name.split("_")[0].lower() if value else "plain"
    elif name in ("Goatee", "Mustache", "No_Beard"):
        ident.male = True
        new.makeup = new.lipstick = False
        wanted = {"Goatee": "goatee", "Mustache": "mustache", "No_Beard": "none"}[name]
        other = "none" if name != "No_Beard" else "full"
        new.beard = wanted if value else other
    elif name == "Male":
        ident.male = value
        new.makeup = new.lipstick = new.makeup and not value
        if value:
            ident.long_hair = False
        else:
            new.beard, new.stubble, new.necktie = "none", False, False
            ident.long_hair = True
    elif name != "Attractive":
        raise KeyError(f"unknown attribute {name!r}")
    new.labels[name] = value
    return new
