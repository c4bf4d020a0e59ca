"""Stage 1, inputs from the outside world: git repositories (`gitsource`), the Comfy Registry (`registry`),
model sources (`modelsource`; each scheme is a row of `schemes`, the one table), downloads with resume
(`download`, `partfile`), safe archive extraction (`archive`), the model store (`modelstore`) and the
resolution cache, and `resolve`, which pins an `original` to a `locked` entry. May import `base` only."""
