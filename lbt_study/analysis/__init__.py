"""Analysis: pure functions over the result tables (trials, history) returning DataFrames;
tested on literal tables. No Ray and no plotting: each function takes the tables as
``lbt_study.results.load_results`` returns them and gives back a new DataFrame.
"""

from lbt_study.analysis.targets import final_and_at_target_gap, reached, time_to_target

__all__ = ["final_and_at_target_gap", "reached", "time_to_target"]
