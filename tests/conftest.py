import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own artifact cache under tmp_path: tests leave no trace."""
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMLAB_PRESET", raising=False)
    yield
