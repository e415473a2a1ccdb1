"""Repository root conftest: makes `tests.*` helper modules importable however pytest is started."""
