"""Festora Vision: image analysis (blur, quality, aesthetics, emotion, embeddings) as a Bento."""

__version__ = "0.1.0"
