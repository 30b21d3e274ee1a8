"""Test utilities for flextok_hf: a loopback fake Hugging Face Hub (`FakeHub`) for offline publishing tests.

`FakeHub` is imported lazily so that `python -m flextok_hf.testing.fake_hub` runs the module only once.
"""

__all__ = ["FakeHub"]


def __getattr__(name: str):
    if name == "FakeHub":
        from .fake_hub import FakeHub

        return FakeHub
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
