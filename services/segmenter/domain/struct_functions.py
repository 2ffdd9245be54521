"""msgspec's Struct functions as the compiled rules call them: each a `Final` name of a compiled module,
which the modules built with it read as a C static. Imported from msgspec by the calling module, each was
a look-up in that module's dict at every call (about 120 instructions; event_classes.py), and the rules
call `replace` several times an event."""

from __future__ import annotations

from typing import Final

from msgspec import structs

replace: Final = structs.replace
astuple: Final = structs.astuple
force_setattr: Final = structs.force_setattr
