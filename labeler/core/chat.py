"""The one type of a chat turn, used by every layer from records up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    role: str = Field(description="system, user or assistant")
    content: str
