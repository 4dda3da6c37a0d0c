"""The ground floor: settings, domain errors and text normalisation that every layer may import."""

__version__ = "0.1.0"
