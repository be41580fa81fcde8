"""lbt-study: batch-size scaling studies on Ray."""

from lbt_study.results import load_results
from lbt_study.spec import Asha, Branched, StopWhen, Study
from lbt_study.workload import Data, Metric, Workload

__version__ = "0.1.0"

__all__ = ["Asha", "Branched", "Data", "Metric", "StopWhen", "Study", "Workload", "load_results",
           "__version__"]
