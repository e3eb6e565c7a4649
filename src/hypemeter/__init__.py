"""Hypemeter: real-time engagement analytics for influencer marketing."""

__version__ = "0.1.0"
