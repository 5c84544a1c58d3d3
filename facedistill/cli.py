"""The ``facedistill`` command line: thin; parses, calls the library, prints.

Errors a user can fix (a bad file, a bad option) print one line ``error: ...`` on stderr and
exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facedistill import __version__
from facedistill.clikit import EXIT_USER_ERROR, err_console
from facedistill.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="facedistill")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with option defaults per command ([data.synth], [train], ...); "
                   "options on the command line override it.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """Compress face-attribute CNNs and ship them to CPUs, GPUs and Jetson.

    \b
    data synth -> train (teacher) -> select (neurons) -> compress (student)
               -> export (ONNX / TensorRT) -> bench -> predict
    pipeline runs them all, resumably.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["config"] = config_path
    if config_path is not None:
        from facedistill.config import load_default_map

        ctx.default_map = load_default_map(ctx.command, config_path)


# -- the verbs: one module each (facedistill/commands/<verb>.py) ----------------------------

_VERBS = ("data", "models", "train", "eval", "select", "compress", "cascade", "export",
          "bench", "predict", "pipeline")


def _add_verbs() -> None:
    """Each verb module defines ``command`` (a click.Command) and imports torch only inside it."""
    import importlib

    for name in _VERBS:
        cli.add_command(importlib.import_module(f"facedistill.commands.{name}").command, name)


_add_verbs()


# -- entry point -----------------------------------------------------------------------------

#: the optional packages a verb may import, and the extra of pyproject.toml that installs each
#: (a runtime-only install has the core dependencies: predict and bench work there)
EXTRA_OF = {"torch": "train", "onnx": "train", "onnxscript": "train",
            "onnxconverter_common": "train", "matplotlib": "train", "cv2": "detect"}


def missing_extra(exc: ModuleNotFoundError, args: list[str]) -> str | None:
    """The one-line message for a verb whose optional package is not installed, or None when
    ``exc`` is not about one of :data:`EXTRA_OF`."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(root)
    if extra is None:
        return None
    verb = next((a for a in args if a in _VERBS), None)
    what = f"'facedistill {verb}'" if verb else "this command"
    return (f"{what} needs the '{extra}' extra ({root} is not installed): "
            f"pip install 'facedistill[{extra}]'")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for anything the user can fix."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="facedistill", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        for one in getattr(exc, "errors", None) or [exc]:  # DataErrors: one line per bad file
            err_console.print(f"error: {one.format()}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc, args)
        if debug or message is None:
            raise
        err_console.print(f"error: {message}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: bad option, missing argument, ...
        if debug:
            raise
        where = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
        err_console.print(f"error: {exc.format_message()}{where}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    if isinstance(code, int) and code:  # e.g. click's own exit codes
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
