"""The 40 CelebA attributes, in the column order of ``list_attr_celeba.txt``.

Torch-free: the runtime, the generator and the reader all share this one list.
"""

from __future__ import annotations

ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

NUM_ATTRIBUTES = len(ATTRIBUTES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(ATTRIBUTES)}

# CelebA's prevalence (%) of each attribute over the whole release, the generator's target
# (its published attribute statistics).
CELEBA_PREVALENCE: dict[str, float] = {
    "Male": 42, "Smiling": 48, "Young": 78, "No_Beard": 83, "Attractive": 51,
    "Heavy_Makeup": 39, "Wearing_Lipstick": 47, "Mouth_Slightly_Open": 48,
    "High_Cheekbones": 45, "Wavy_Hair": 32, "Oval_Face": 28, "Pointy_Nose": 28,
    "Arched_Eyebrows": 27, "Big_Lips": 24, "Black_Hair": 24, "Big_Nose": 23, "Brown_Hair": 21,
    "Straight_Hair": 21, "Bags_Under_Eyes": 20, "Wearing_Earrings": 19, "Bangs": 15,
    "Blond_Hair": 15, "Bushy_Eyebrows": 14, "Wearing_Necklace": 12, "Narrow_Eyes": 12,
    "5_o_Clock_Shadow": 11, "Receding_Hairline": 8, "Wearing_Necktie": 7, "Eyeglasses": 7,
    "Rosy_Cheeks": 7, "Goatee": 6, "Chubby": 6, "Sideburns": 6, "Blurry": 5, "Wearing_Hat": 5,
    "Double_Chin": 5, "Pale_Skin": 4, "Gray_Hair": 4, "Mustache": 4, "Bald": 2,
}  # fmt: skip

assert set(CELEBA_PREVALENCE) == set(ATTRIBUTES)

# Groups in which at most one attribute may be positive for any image.
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald"),
    ("Straight_Hair", "Wavy_Hair", "Bald"),
    ("No_Beard", "Goatee"),
    ("No_Beard", "Mustache"),
    ("Bald", "Bangs"),
)

# Column names of the bbox and landmark files (after ``image_id``).
BBOX_NAMES: tuple[str, ...] = ("x_1", "y_1", "width", "height")
LANDMARK_NAMES: tuple[str, ...] = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip

# Standard CelebA partition sizes: train / val / test.
CELEBA_SPLIT_SIZES: tuple[int, int, int] = (162_770, 19_867, 19_962)
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
