from tests.reliability import effort  # noqa: F401  (loads the hypothesis profile)
