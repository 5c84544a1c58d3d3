"""The configuration of ``pipeline``'s own table: which models the main job makes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click

from facedistill.config.fields import opt
from facedistill.config.loader import NumberList
from facedistill.config.train import ARCHS
from facedistill.errors import ConfigError

STUDENTS = tuple(a for a in ARCHS if a != "tnet")


def str_list(value: Any) -> tuple[str, ...]:
    """``"a,b"``, ``["a", "b"]`` or ``("a,b",)`` (a repeatable option given a comma list) ->
    ``("a", "b")``."""
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(v.strip() for item in items if item is not None for v in str(item).split(",")
                 if v.strip())


def _flat(values: Iterable[Any]) -> tuple[float, ...]:
    out: list[float] = []
    for v in values:
        out += [float(w) for w in (v if isinstance(v, list | tuple) else [v])]
    return tuple(out)


@dataclass(frozen=True)
class PipelineOptions:
    """The models of the main job: students, teachers (an ensemble), twins, benched variants."""

    students: tuple[str, ...] = opt(STUDENTS, "Students to distil (repeat or comma-separate).")
    teachers: int = opt(1, "Train an ensemble of this many teachers (seeds train.seed + i) and "
                           "distil every student from all of them.", type=click.IntRange(min=1))
    teacher_widths: tuple[float, ...] = opt(
        (), "An ensemble of teachers of these widths (one per teacher, seeds train.seed + i) "
            "[default: every teacher at train.width].", type=NumberList(), multiple=True,
        metavar="W1,W2,...")
    twins: tuple[str, ...] = opt((), "Students that also train on the labels alone with the "
                                     "same budget, for the report's distillation-gain table "
                                     "[default: none].")
    bench_precisions: tuple[str, ...] = opt(("fp32", "int8"), "ONNX precisions the bench stage "
                                                              "times.")
    cascade: bool = opt(False, "Also build the cascade for unaligned faces (needs [train] "
                               "variant wild): an FRL net for the region boxes, fixed-box part "
                               "subnets, the teacher as the whole-image subnet, switch and "
                               "relations; and its compressed twin (cascade-small).")
    frl_width: float = opt(0.25, "cascade: width of the FRL net whose mean boxes place the "
                                 "regions.")
    parts_width: float = opt(0.5, "cascade: width of the part subnets.")
    small_parts_width: float = opt(0.25, "cascade-small: width of the part subnets distilled "
                                         "from the cascade's.")
    cascade_whole: str = opt("snet3", "cascade-small: the student that is its whole-image "
                                      "subnet (one of the students).")

    def __post_init__(self) -> None:
        students = str_list(self.students)
        if not students or any(s not in ARCHS for s in students):
            raise ConfigError(f"students must be some of {', '.join(STUDENTS)}, not "
                              f"{list(students)}", field="students")
        twins = str_list(self.twins)
        if any(t not in students for t in twins):
            raise ConfigError(f"twins must be some of the students ({', '.join(students)}), "
                              f"not {list(twins)}", field="twins")
        count = self.teachers
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"teachers must be a whole number >= 1 (an ensemble of that many "
                              f"teachers, seeds train.seed + i), not {count!r}",
                              field="teachers")
        try:
            widths = _flat(self.teacher_widths)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a list of widths, not {self.teacher_widths!r}",
                              field="teacher_widths") from None
        if widths and count not in (1, len(widths)):
            raise ConfigError(f"{len(widths)} teacher widths but teachers = {count}; give one "
                              "width per teacher (or leave teachers out)",
                              field="teacher_widths")
        for name in ("frl_width", "parts_width", "small_parts_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"must be a positive number, not {value!r}", field=name)
        if self.cascade and self.cascade_whole not in students:
            raise ConfigError(f"the compressed cascade's whole-image subnet must be one of the "
                              f"students ({', '.join(students)}), not {self.cascade_whole!r}",
                              field="cascade_whole")
        precisions = str_list(self.bench_precisions)
        for name, value in (("students", students), ("twins", twins),
                            ("teacher_widths", widths), ("bench_precisions", precisions)):
            object.__setattr__(self, name, value)

    @property
    def n_teachers(self) -> int:
        return len(self.teacher_widths) or self.teachers
