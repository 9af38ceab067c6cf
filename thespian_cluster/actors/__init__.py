"""Thin actor shells: each receives a message, calls a pure core, sends the result."""
