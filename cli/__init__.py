"""The ``ornav`` command: one module per verb, the top layer (nothing imports it).

``cli.errors`` sits at the bottom (``UserError``), the verb modules import it, and
``cli.main`` imports the verbs and maps errors to exit codes.
"""
