"""tfkd's version, in a module of its own.

Modules inside tfkd that record the version (a cache's metadata) import
it from here: importing the `tfkd` package itself from inside it would be
an import cycle.
"""

__version__ = "0.1.0"
