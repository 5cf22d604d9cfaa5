"""Culling a shoot: grouping (grouping.py), relative ranking (ranking.py), verdicts with reason
codes (verdicts.py), the optional LLM comparison of finalists (llm.py); `cull` ties them."""

from festora.cull.schemas import CullOptions, CullRequest, CullResponse
from festora.cull.shoot import CullError, cull

__all__ = ["CullError", "CullOptions", "CullRequest", "CullResponse", "cull"]
