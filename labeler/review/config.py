"""The options of `labeler review`, in one frozen model."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from labeler.store.human import ANNOTATOR_PATTERN


class ReviewConfig(BaseModel):
    """Which run to review, where to serve it, and who labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: Path = Field(description="Run folder (with manifest.json) to browse and label.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (keep 127.0.0.1: local only).")
    port: int = Field(8765, ge=0, le=65535, description="Port to listen on (0: any free port).")
    annotator: str = Field(
        "reviewer",
        pattern=ANNOTATOR_PATTERN,
        description="Your name in the labels you add (RUN/human/NAME.jsonl): letters, digits, '.', '_', '-'.",
    )
    reward_model: Path | None = Field(
        None,
        description="A reward model folder (labeler train-rm): every pair is scored in the background, and the "
        "list filters pairs on which it agrees or disagrees with the judge.",
    )
    page_size: int = Field(50, ge=1, le=1000, description="Pairs per page of the list.")
