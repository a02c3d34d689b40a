"""Command line: thin commands that gather arguments, call the library and print its result."""

from onnxmtl.cli.main import main
from onnxmtl.cli.parser import build_parser

__all__ = ["build_parser", "main"]
