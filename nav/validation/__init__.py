"""Validation of recorded sessions: pure analysis on arrays (no files, no clocks).

``ornav validate`` (``cli/validate``) reads recordings into arrays and calls these:

- ``episodes``: runs of one state on a timeline (navigation status, overlay state);
- ``stats``: percentiles and CDFs of latencies and ages;
- ``motion``: per-tool visibility, sample rate and jitter on static segments;
- ``touches``: pointer dwells over a whole session, matched to a case's fiducials
  without knowing which touch was which (so a registration can be re-run offline);
- ``verdict``: the limits a validation engineer sets, and pass / fail against them.
"""
