"""Subcommands of the ``crackseg`` command line, one module each.

A module defines ``register(subparsers)``, which adds its parser and sets
``func`` (a function of the parsed arguments returning an exit status).
Heavy imports belong inside that function.
"""
