"""labeler: turn a written constitution into preference data and reward models."""

__version__ = "0.1.0"
