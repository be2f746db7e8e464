"""Helpers shared by the test modules (and the codec fuzzer): importable as ``helpers.*`` because
pyproject.toml's ``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on ``sys.path``.

``testbed``: the emulab runner, testbed guard and real-kernel check; ``netns_lab``: throwaway
network-namespace labs for the rserpool root tests; ``wire_strategies``: hypothesis strategies for
every ASAP/ENRP/CalcApp message; ``pool_lab``: an in-process registrar with PEs and PUs on loopback.
"""
