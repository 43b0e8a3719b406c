"""``archscreen import pkg.mod:Net --input-shape 1,28,28 -o spec.yaml``: a PyTorch module as a spec.

Runs on the client only: importing and tracing execute the user's code, which the service
never does (it takes specs). The module is imported from the current directory or
``PYTHONPATH``; a class or factory is called with no arguments. What the DSL cannot express
is one ``node: reason`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archscreen.cli_common import EXIT_OK, CliError


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,28,28, got {text!r}")
    return shape


def add_import_command(sub: argparse._SubParsersAction) -> None:
    """Register ``import`` on the top-level subcommands."""
    p = sub.add_parser("import", help="turn a PyTorch nn.Module into a spec (runs your code locally)")
    p.add_argument("target", metavar="pkg.module:Name", help="an nn.Module instance, class or factory")
    shape_help = "one sample's shape without the batch dim, e.g. 1,28,28 or 64 (token ids)"
    p.add_argument("--input-shape", required=True, type=_shape, metavar="C,H,W", help=shape_help)
    p.add_argument("-o", "--output", default=None, metavar="PATH", help="spec file (default: stdout)")
    p.add_argument("--head", choices=("classifier", "regression"), default="classifier")
    p.add_argument("--name", default=None, help="spec name (default: the imported name)")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    import yaml

    from archscreen.core.spec.importer import ImportRefused, import_module, load_module

    sys.path.insert(0, str(Path.cwd()))  # `pkg.mod` next to where the user runs the command
    try:
        model = load_module(args.target)
        name = args.name or args.target.rpartition(":")[2]
        imported = import_module(model, args.input_shape, name=name, head=args.head)
    except (ValueError, ImportRefused) as exc:
        raise CliError(str(exc)) from None
    finally:
        sys.path.pop(0)
    document = {"name": imported.spec.name, **imported.spec.canonical()}
    origin = f"# imported from {args.target}: input {list(args.input_shape)}, {imported.info.task}\n"
    text = origin + yaml.safe_dump(document, sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        layers = len(imported.spec.layers)
        print(f"wrote {args.output}: {layers} layers, head {imported.spec.head}", file=sys.stderr)
    return EXIT_OK
