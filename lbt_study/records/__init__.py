"""The records on disk: the run directory's files (``rundir``), each trial's row log
(``rowlog``), the trials and history tables (``results``), their documented columns
(``schema``) and crossing a target (``targets``). No Ray and no torch: a report or a pandas
session reads a run directory without either."""
