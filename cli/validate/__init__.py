"""``ornav validate``: recorded sessions into reports a validation engineer signs.

- ``sources``: an ornav MCAP recording or a PLUS sequence file -> ``Session`` (arrays);
- ``offline``: the registration re-run from the recorded touches, with each method;
- ``analysis``: a ``Session`` -> the report document (``report.json``: every figure's data);
- ``figures`` and ``page``: that document -> one self-contained HTML file;
- ``study``: many recordings on Dask, and the study page;
- ``command``: the command line.
"""
