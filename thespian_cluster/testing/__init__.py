"""Tools for tests, benchmarks and demos, not the runtime: nothing a node imports lives
here (an etcd server launcher, so far)."""
