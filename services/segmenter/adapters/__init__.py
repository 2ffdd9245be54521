"""The segmenter's I/O: its tables and statements, the profile cache, and the decoding of the events it reads.

The events' decoding (event_decoding.py) runs compiled by mypyc when `make install` built it from these very
sources (shared/compiled.py); otherwise, interpreted as it is. The rest waits for the database and stays
interpreted.
"""

from shared.compiled import use_compiled

use_compiled(__name__, __path__)
