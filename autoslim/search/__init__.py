"""Search: the greedy channel search, its budgets, its trajectory file and the scorers of candidates.

- :mod:`~autoslim.search.greedy`: ``greedy_search`` and ``greedy_slim`` (pure logic);
- :mod:`~autoslim.search.targets`: budgets (``Target``) and picking a trajectory point;
- :mod:`~autoslim.search.trajectory`: the trajectory CSV and its Pareto front;
- :mod:`~autoslim.search.scoring`: ``BatchScorer``, one held-out batch; :mod:`~autoslim.search.sliced`:
  ``SlicedScorer``, all held-out images in slices;
- :mod:`~autoslim.search.runner`: ``search_run`` (the search command's library half).
"""

from .greedy import (CRITERIA, SIGNALS, Evaluator, Ranking, Score, Step, choice_leads, criterion_key, greedy_search,
                     greedy_slim, signal_value)
from .targets import TARGET_KINDS, Target, parse_targets, stop_limits, check_targets, pick
from .trajectory import TRAJECTORY_COLUMNS, append_step, write_trajectory, read_trajectory, pareto_front
from .scoring import BatchScorer, batch_statistics
from .sliced import SlicedScorer, SLICE_SIZE
from .runner import SearchSettings, SearchResult, search_run

__all__ = ["CRITERIA", "SIGNALS", "Evaluator", "Ranking", "Score", "Step", "choice_leads", "criterion_key",
           "greedy_search", "greedy_slim", "signal_value", "TARGET_KINDS", "Target", "parse_targets", "stop_limits",
           "check_targets", "pick", "TRAJECTORY_COLUMNS", "append_step", "write_trajectory", "read_trajectory",
           "pareto_front", "BatchScorer", "batch_statistics", "SlicedScorer", "SLICE_SIZE", "SearchSettings",
           "SearchResult", "search_run"]
