"""Time to a target, as the analysis functions use it: see ``lbt_study.records.targets`` (which sits
below the results writer too, so both measure a crossing with one piece of code)."""

from lbt_study.records.targets import final_and_at_target_gap, reached, time_to_target

__all__ = ["final_and_at_target_gap", "reached", "time_to_target"]
