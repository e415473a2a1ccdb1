"""Repository root conftest: makes `tests.*` helper modules importable however pytest is started,
and makes hypothesis deterministic with no per-example deadline (machines here are shared and
noisy: a slow example is not a failure)."""
from hypothesis import settings

settings.register_profile("xputools", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("xputools")
