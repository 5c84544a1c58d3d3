"""Configuration: TOML files whose tables mirror the CLI's commands.

A config file sets option defaults per command; options given on the command line win::

    [data.synth]          # facedistill data synth
    out = "data/synth"
    n = 20000
    wild = true

    [data.check]          # facedistill data check
    root = "data/synth"

Keys are the options' long names without their dashes (``--calib-n`` is ``calib_n``, also
written ``calib-n``; ``--json`` is ``json``), arguments go by their name (``root``). An unknown
table or key is an error naming the file and the dotted key, with the nearest known name, so a
typo never passes silently. The defaults themselves live in the library's dataclasses (e.g.
:class:`SynthConfig`, :class:`TrainConfig`), the one source the CLI reads them from.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import click

from facedistill.errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", path=path) from None


def unknown_name(what: str, name: str, known: Sequence[str]) -> str:
    """``unknown option 'epoch' (did you mean 'epochs'? known: ...)`` or ``unknown command
    table [trian] (did you mean [train]? ...)``: the one wording wherever a config is read."""
    show = (lambda n: f"[{n}]") if what.endswith("table") else repr
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {show(near[0])}? " if near else ""
    return f"unknown {what} {show(name)} ({hint}known: {', '.join(known) or 'none'})"


def option_key(param: click.Parameter) -> str:
    """The TOML key of a command's parameter: an option's long name without its dashes, in
    TOML's spelling (``--calib-n`` -> ``calib_n``, ``--json`` -> ``json``, ``--from`` ->
    ``from``); an argument's name (``root``, ``source``)."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs[0] if longs else param.opts[0]).lstrip("-").replace("-", "_")
    return str(param.name)


def toml_keys(command: click.Command) -> dict[str, click.Parameter]:
    """``{TOML key: parameter}`` of ``command``: the keys its config table may hold."""
    return {option_key(p): p for p in command.params if p.name and p.name != "help"}


def command_at(root: click.Group, dotted: str) -> click.Command:
    """The command of a config table (``data.synth`` -> ``facedistill data synth``)."""
    cmd: click.Command = root
    for part in dotted.split("."):
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return cmd


def option_default(command: click.Command, param: click.Parameter) -> Any:
    """A parameter's default as a config value, as click resolves it (a flag without one is
    false; a list for a repeatable option)."""
    value = param.get_default(click.Context(command), call=True)
    if not isinstance(value, str | int | float | tuple | list | Path):
        value = None  # None, or click's marker for "no default"
    return list(value or ()) if param.multiple else value


def config_table(default_map: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Table ``dotted`` of a ``default_map`` (:func:`load_default_map`), ``{}`` when absent."""
    table: Any = default_map
    for part in dotted.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    return dict(table)


def table_options(root: click.Group, default_map: dict[str, Any], dotted: str
                  ) -> dict[str, Any]:
    """``{parameter name: value}`` of the command of table ``dotted``: its defaults, then the
    config's values. What another command reads of that table (the pipeline's stages,
    ``compress``'s own selection)."""
    command = command_at(root, dotted)
    values = {str(p.name): option_default(command, p) for p in command.params
              if p.name and p.name != "help"}
    return values | config_table(default_map, dotted)


def to_default_map(
    command: click.Command, table: dict[str, Any], path: str | os.PathLike[str], prefix: str = ""
) -> dict[str, Any]:
    """Check ``table`` against ``command``'s tree and return click's ``default_map`` (keyed by
    the parameters' names, as click wants it)."""
    result: dict[str, Any] = {}
    if isinstance(command, click.Group):
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            sub = command.commands.get(key)
            if sub is None:
                raise ConfigError(unknown_name("command table", dotted,
                                               [f"{prefix}{c}" for c in sorted(command.commands)]),
                                  path=path, field=dotted)
            if not isinstance(value, dict):
                raise ConfigError(f"[{dotted}] must be a table of options", path=path,
                                  field=dotted)
            result[key] = to_default_map(sub, value, path, prefix=f"{dotted}.")
        return result
    params = toml_keys(command)
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        param = params.get(key.replace("-", "_"))
        if param is None:
            raise ConfigError(unknown_name("option", key, sorted(params)), path=path,
                              field=dotted)
        if param.multiple and not isinstance(value, list):
            value = [value]
        wrong = toml_type_error(param, value)
        if wrong:
            raise ConfigError(f"bad value {value!r}: {wrong}", path=path, field=dotted)
        try:  # convert now so that a bad value names the file, not the command line
            ctx = click.Context(command)
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigError(f"bad value {value!r}: {exc.message}", path=path,
                              field=dotted) from None
        result[str(param.name)] = value
    return result


class NumberList(click.ParamType):
    """A comma list of numbers on the command line (``--teacher-widths 1,0.5``), a list of
    numbers in TOML (``teacher_widths = [1.0, 0.5]``): each occurrence -> a list of floats."""

    name = "numbers"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> list[float]:
        if isinstance(value, list):
            return value
        items = [value] if isinstance(value, int | float) else str(value).split(",")
        try:
            out = [float(v) for v in items if str(v).strip()]
        except ValueError:
            self.fail(f"expected numbers like 1,0.5; got {value!r}", param, ctx)
        if not out or not all(math.isfinite(v) for v in out):
            self.fail(f"expected finite numbers like 1,0.5; got {value!r}", param, ctx)
        return out


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def toml_type_error(param: click.Parameter, value: Any) -> str | None:
    """What is wrong with the TOML type of ``value`` for ``param``, or None. Stricter than
    click's conversion, which turns ``1.5`` or ``true`` into the integer 1 and passes a number
    on as a path: TOML has types, so a config value must already have the option's."""
    if param.multiple or param.nargs == -1:
        if not isinstance(value, list):
            return f"expected a list, got {_kind(value)}"
        items = value
    else:
        items = [value]
    t = param.type
    for item in items:
        if (isinstance(param, click.Option) and param.is_flag) or \
                isinstance(t, click.types.BoolParamType):
            ok, want = isinstance(item, bool), "a boolean (true or false)"
        elif isinstance(t, click.types.IntParamType):
            ok, want = isinstance(item, int) and not isinstance(item, bool), "an integer"
        elif isinstance(t, click.types.FloatParamType):
            ok = isinstance(item, int | float) and not isinstance(item, bool)
            want = "a number"
        elif isinstance(t, NumberList):
            ok = isinstance(item, int | float | str) and not isinstance(item, bool)
            want = "a number"
        else:  # paths, choices, strings and the options parsed by a callback ("1,8,32")
            ok, want = isinstance(item, str), "a string"
        if not ok:
            return f"expected {want}, got {_kind(item)}"
    return None


def load_default_map(command: click.Command, path: str | os.PathLike[str]) -> dict[str, Any]:
    result = to_default_map(command, read_toml(path), path)
    if isinstance(command, click.Group):
        _check_values(command, result, path)
    return result


def _check_values(root: click.Group, default_map: dict[str, Any],
                  path: str | os.PathLike[str]) -> None:
    """Run the config dataclasses' own checks on the tables they cover, so that a value they
    reject (``epochs = 0``) names the config file and its dotted key, not the command line."""
    for dotted, cls in (("train", TrainConfig), ("compress", TrainConfig),
                        ("data.synth", SynthConfig)):
        table = config_table(default_map, dotted)
        if not table:
            continue
        known = {f.name for f in fields(cls)}
        key_of = {p.name: option_key(p) for p in command_at(root, dotted).params}
        try:
            cfg = cls(**{k: v for k, v in table.items() if k in known})
            if hasattr(cfg, "validate"):
                cfg.validate()
        except UserError as exc:
            where = f"{dotted}.{key_of.get(exc.field, exc.field)}" if exc.field else dotted
            raise ConfigError(exc.message, path=path, field=where) from None


# -- the synthetic dataset (here, not beside its generator: the CLI reads these defaults without
# importing numpy) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """What defines a synthetic dataset; equal configs give byte-identical datasets."""

    n: int = 20_000
    size: int = 64
    seed: int = 0
    wild: bool = False
    images_per_identity: float = 5.0

    def validate(self) -> None:
        if self.n < 3:
            raise UserError(f"--n must be at least 3 (one image per split), got {self.n}",
                            field="n")
        if not 16 <= self.size <= 1024:
            raise UserError(f"--size must be in 16..1024 pixels, got {self.size}", field="size")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}", field="seed")
        if not (math.isfinite(self.images_per_identity) and self.images_per_identity >= 1):
            raise UserError(f"--images-per-identity must be a number >= 1, got "
                            f"{self.images_per_identity}", field="images_per_identity")


# -- training defaults (the one source the CLI, the pipeline and the benchmarks read) ----------


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; stored in every checkpoint.

    ``precision``: ``auto`` picks bf16 autocast on a CUDA GPU that has it (fp16 + GradScaler on
    older GPUs) and on a CPU with AMX, else fp32: on CPUs with AVX512-BF16 alone bf16 autocast
    was measured no faster than fp32 (``benchmarks/cpu_precision.py``). ``channels_last``:
    ``auto`` = on (1.06-1.5x faster student training steps on the 2-core CI CPU, TNet ~10%
    slower; the usual layout for autocast on GPUs). ``ema``: decay of the
    exponential moving average of the weights, 0 = off; when on, validation, thresholds and the
    deployed weights are the EMA's. ``warmup`` and ``epochs`` are in epochs. ``pos_weight``:
    weight of each attribute's positives in the label loss, from the training split's
    prevalence p: ``none`` (1, plain BCE), ``sqrt`` (``sqrt((1-p)/p)``) or ``balanced``
    (``(1-p)/p``: both classes count equally, like balanced accuracy); capped at 50.
    """

    arch: str = "tnet"
    width: float = 1.0
    size: int = 64
    variant: str = "aligned"
    margin: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup: float = 1.0
    min_lr: float = 0.01  # the cosine ends at lr * min_lr
    grad_clip: float = 5.0  # max global grad norm; 0 = off
    pos_weight: str = "none"
    ema: float = 0.0
    precision: str = "auto"
    channels_last: str = "auto"
    device: str = "auto"
    workers: int = 1
    seed: int = 0
    deterministic: bool = False

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "optimizer": ("adamw", "sgd"),
        "precision": ("auto", "fp32", "bf16", "fp16"),
        "channels_last": ("auto", "on", "off"),
        "device": ("auto", "cpu", "cuda"),
        "variant": ("aligned", "wild"),
        "pos_weight": ("none", "sqrt", "balanced"),
    }

    def __post_init__(self) -> None:
        for name, choices in self.CHOICES.items():
            value = getattr(self, name)
            if value not in choices and not (name == "device" and str(value).startswith("cuda:")):
                raise ConfigError(f"must be one of {', '.join(choices)}, not {value!r}",
                                  field=name)
        positive = ("width", "size", "epochs", "batch_size", "lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, not {getattr(self, name)!r}", field=name)
        non_negative = ("weight_decay", "momentum", "warmup", "min_lr", "grad_clip", "workers")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0, not {getattr(self, name)!r}", field=name)
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), not {self.ema!r}", field="ema")

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


#: the ONNX variants an export writes: runtime.metadata.PRECISIONS, which this module (below the
#: runtime in the layer map) cannot import; tests/test_cli.py checks that the two agree
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")


def export_precisions(onnx: bool, fp16: bool, int8: bool, precision: str | None) -> list[str]:
    """The ONNX variants an export writes, from ``export``'s options (the CLI's and the
    pipeline's ``[export]`` table): the flags plus the comma list ``precision``; none of them
    means all three. fp32 is always written (the others derive from it)."""
    chosen = [p for p, on in (("fp32", onnx), ("fp16", fp16), ("int8", int8)) if on]
    chosen += [p.strip().lower() for p in (precision or "").split(",") if p.strip()]
    bad = [p for p in chosen if p not in EXPORT_PRECISIONS]
    if bad:
        raise ConfigError(f"unknown precision {bad[0]!r} (fp32, fp16, int8)", field="precision")
    chosen = chosen or list(EXPORT_PRECISIONS)
    return [p for p in EXPORT_PRECISIONS if p in chosen or p == "fp32"]


def parse_term_weights(items: Sequence[str]) -> dict[str, float] | None:
    """``["selected=0.3", ...]`` (the CLI's ``--weight`` and the config's ``weight``) ->
    ``{"selected": 0.3}``; ``None`` when empty. Terms and values are checked by the objective."""
    out: dict[str, float] = {}
    for item in items:
        term, sep, value = str(item).partition("=")
        try:
            if not sep:
                raise ValueError
            out[term.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"expected TERM=WEIGHT, e.g. selected=0.3, not {item!r}",
                              field="weight") from None
    return out or None
