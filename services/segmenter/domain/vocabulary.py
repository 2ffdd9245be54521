"""The funnel's vocabulary (shared/funnel.py) as the compiled rules read it: each member and table the
segmenter's rules read while deriving a history, as a `Final` constant of a compiled module.

mypyc makes a `Final` name of a compiled module a C static, which the modules built with it read in under
a nanosecond. A member read from its class (`LoyaltyStage.PROSPECT`) is a look-up of the class in the
module's dict and then the class's attribute look-up, about 47 ns a read in compiled code, and an imported
name (`VALUE`) the dict's look-up alone, about 8 ns (a compiled loop's reads, best of 7, this machine); the
rules read them for every point of every history they derive, several times an event. The compiled
modules' own constants (memos, sort keys, limits) are `Final` for the same reason. Over the benchmark's
replay of 200,000 events: 2,944 instructions an event fewer (callgrind; bench/README.md, fifty-sixth
round)."""

from __future__ import annotations

from typing import Final

from shared import funnel
from shared.funnel import Health, LoyaltyStage, SurveyLevel

PROSPECT: Final[LoyaltyStage] = LoyaltyStage.PROSPECT
FIRST_TIME: Final[LoyaltyStage] = LoyaltyStage.FIRST_TIME
REPEAT: Final[LoyaltyStage] = LoyaltyStage.REPEAT
LOYAL: Final[LoyaltyStage] = LoyaltyStage.LOYAL
ADVOCATE: Final[LoyaltyStage] = LoyaltyStage.ADVOCATE

ACTIVE: Final[Health] = Health.ACTIVE
AT_RISK: Final[Health] = Health.AT_RISK
LAPSED: Final[Health] = Health.LAPSED

NO_LEVEL: Final[SurveyLevel] = SurveyLevel.NONE

STAGE_RANK: Final = funnel.STAGE_RANK
LEVEL_RANK: Final = funnel.LEVEL_RANK
VALUE: Final = funnel.VALUE
STAGE_OF: Final = funnel.STAGE_OF
HEALTH_OF: Final = funnel.HEALTH_OF
