"""Subcommands of `flextok-hf`; see `flextok_hf.cli`."""
