"""The base of the msgspec Structs that the compiled modules of this package define.

mypyc builds a class that is not its own (a Struct's metaclass is msgspec's) by calling the metaclass with
the name, the bases and the namespace only: the class statement's keywords (`frozen=True, gc=False`) are
dropped without a word, and the compiled class comes out mutable and tracked by the garbage collector,
unlike the interpreted one. A Struct inherits those two settings from its base, so a compiled module's
Structs derive from `Record`, defined here, in a module that always runs interpreted (shared/compiled.py
leaves it out of COMPILED). They repeat `frozen=True` for mypy only, which wants a frozen base's subclasses
to say so; what holds at run time is the base's setting (tests/unit/test_compiled_modules.py checks it)."""

from __future__ import annotations

import msgspec


class Record(msgspec.Struct, frozen=True, gc=False):
    """Immutable, hashable, and never tracked by the garbage collector (its instances hold no cycles)."""
