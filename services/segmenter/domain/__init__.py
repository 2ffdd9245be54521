"""The segmenter's rules: pure functions of events and profiles, no I/O.

Most of its modules run compiled by mypyc when `make install` built them from these very sources
(shared/compiled.py); otherwise, interpreted as they are.
"""

from shared.compiled import use_compiled

use_compiled(__name__, __path__)
