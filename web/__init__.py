"""The web API and dashboard (FastAPI). Grows with the dashboard issue."""

__all__: list[str] = []
