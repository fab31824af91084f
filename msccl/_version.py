"""The version, in a module of its own: the commands read it without importing the package facade."""

__version__ = "0.1.0"
