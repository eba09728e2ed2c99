"""fastzero-lab core: servers, clients, runs, measurement. Imports nothing from app/."""

__version__ = "0.1.0"
