"""Host trainer: normalizing flows learned from images of good parts only."""
