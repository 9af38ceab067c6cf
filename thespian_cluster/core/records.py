"""Frozen dataclasses that travel between actors: cheap to pickle and to name.

Two costs of a plain ``@dataclass(frozen=True, slots=True)`` show up in the global
scope's profile, on every message between RegistryDists:

* **pickling**: a slotted dataclass pickles through ``__getstate__`` /
  ``__setstate__``, which call ``dataclasses.fields()`` for every object, nested
  ones included (a ``Decisions`` with its ``Delta``: ~20 µs each way).
  :class:`Record` pickles as a call of the class with its fields in order instead;
* **naming**: Thespian builds ``str()`` of every message it sends for two debug
  lines, whatever the log level, and a dataclass's ``str()`` is its whole
  ``repr()``, recursively: a snapshot of 100,000 names was formatted in full, twice
  per send. :class:`WireMessage` is named by its class; ``repr()`` keeps every field
  for a reader who asks.

Usage: inherit, and keep the dataclass decorator::

    @dataclass(frozen=True, slots=True)
    class Delta(WireMessage):
        term: Term
        ...

Every field must be an ``__init__`` argument, in declaration order (the default of
a dataclass without ``kw_only`` or ``init=False`` fields), and no ``InitVar``. The
fields travel by position: nodes of different versions agree only if new fields are
appended, with defaults.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any


class Record:
    """A slotted dataclass that pickles as ``cls(*fields)``."""

    __slots__ = ()
    _fields_of: Callable[[Any], tuple[Any, ...]] = staticmethod(lambda record: ())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # ``@dataclass(slots=True)`` builds the class a second time with ``__slots__``
        # (its fields, in order); this runs for that one too. One C call per pickle.
        if "__slots__" not in cls.__dict__ or "__dataclass_fields__" not in cls.__dict__:
            return  # the first build, or not a slotted dataclass: nothing to pickle
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        if any(not f.init or f.kw_only for f in fields):
            raise TypeError(f"{cls.__name__}: a Record's fields must be positional arguments")
        names = [f.name for f in fields]
        if len(names) > 1:
            cls._fields_of = staticmethod(operator.attrgetter(*names))
        elif names:
            getter = operator.attrgetter(names[0])
            cls._fields_of = staticmethod(lambda record: (getter(record),))

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        cls = type(self)
        if "_fields_of" not in cls.__dict__ and cls.__dict__.get("__slots__") != ():
            # A subclass that is not a slotted dataclass itself would pickle as its
            # parent's fields only: refuse it rather than lose a field on the wire.
            raise TypeError(f"{cls.__name__} must be a @dataclass(slots=True) to pickle")
        return cls, self._fields_of(self)


class WireMessage(Record):
    """A :class:`Record` sent as a message: ``str()`` is its class name."""

    __slots__ = ()

    def __str__(self) -> str:
        return type(self).__name__
