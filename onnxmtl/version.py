"""The package's version, in a module of its own: any stage can record it without importing
the package's top level, which imports every stage."""

__version__ = "0.1.0"
