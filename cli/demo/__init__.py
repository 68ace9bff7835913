"""``ornav demo``: the simulated stack, a headset client and a scripted operator.

``command`` runs it, ``script`` holds the operator's phases, ``sim_registration`` drives
the nav node's registration on the simulator (also used by tests and benchmarks).
"""
