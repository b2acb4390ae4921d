"""Shared by the format tests: the ``corpus`` fixture (skips with the reason when the corpus is absent)."""

from __future__ import annotations

import pytest
from corpus_files import Corpus, corpus_dir, load_corpus


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    loaded = load_corpus()
    if loaded is None:
        pytest.skip(f"conformance corpus not found at {corpus_dir()} (set CCPROXY_CONFORMANCE_DIR)")
    return loaded
