"""hfcord: chat with Hugging Face language models in Discord channels."""

__version__ = "0.1.0"
