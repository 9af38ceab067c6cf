"""OTP supervisors as Thespian actors: the generic :class:`Supervisor` and the node's own
tree (``NodeSupervisor``, ``ClusterSupervisor``). See docs/supervision.md.

A package like every other folder here: without this file ``pip install .`` leaves the
folder out of the wheel (tests/packaging checks every folder is shipped)."""
