"""Exploratory report on a labelled CSV (topic or sentiment): what the classes look like before
any model sees them. :mod:`.profile` makes one pass over the rows, :mod:`.figures` draws from
that profile, :mod:`.report` writes the PNGs, ``summary.json`` and ``index.html``."""

from fintweet.trainer.eda.figures import FIGURES
from fintweet.trainer.eda.profile import Profile, guess_task, profile, rank_terms
from fintweet.trainer.eda.report import write_report

__all__ = ["FIGURES", "Profile", "guess_task", "profile", "rank_terms", "write_report"]
