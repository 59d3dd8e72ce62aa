"""Loaded first by the parser pool's forkserver, whose children (the readers) inherit what it sets.

The forkserver also loads the program's main module, so that a reader does not import the whole
program again when it starts (see ``parsers.sandbox``). A reader still runs the main module's own
code again before reading, as every multiprocessing child does; when the program was started as
``python -m package.module``, runpy then warns that the module is loaded already. That is exactly
what was intended, so the warning is not shown.
"""

import warnings

warnings.filterwarnings(
    "ignore",
    message=r"'.*' found in sys\.modules after import of package",
    category=RuntimeWarning,
    module="runpy",
)
