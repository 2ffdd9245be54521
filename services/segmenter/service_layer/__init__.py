"""What the segmenter makes of a batch between reading it and writing it: its decisions, event after event
(deciding.py), and the write set they fill (write_set.py), which a round of timers fills too.

Its modules run compiled by mypyc when `make install` built them from these very sources (shared/compiled.py);
otherwise, interpreted as they are.
"""

from shared.compiled import use_compiled

use_compiled(__name__, __path__)
