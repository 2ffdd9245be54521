"""What the segmenter does with its rules' decisions: the write set of a batch or a round of timers.

Its modules run compiled by mypyc when `make install` built them from these very sources (shared/compiled.py);
otherwise, interpreted as they are.
"""

from shared.compiled import use_compiled

use_compiled(__name__, __path__)
