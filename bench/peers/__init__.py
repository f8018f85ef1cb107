"""The peers of conveyor in ``make bench``: one module per system, same workload, same probe.

See common.py for the interface every module implements and run.py for how they are run.
"""
