"""`make chaos`: the simulator's store through the public endpoints while every component is SIGKILLed and
restarted in turn; then what was acknowledged, lost, duplicated or dead-lettered, and how long each
recovery took."""
