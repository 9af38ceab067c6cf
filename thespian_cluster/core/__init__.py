"""Pure decision logic: no Thespian import, no I/O. Every object here takes a
command and returns a result, so it is tested in microseconds (tests/unit)."""
