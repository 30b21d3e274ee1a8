"""Previews while the prior generates: decoded images each time it has produced the next power-of-two number of ids.

```python
for step in pipe("a giraffe", num_tokens=32, stream=True, generator=torch.Generator().manual_seed(0)):
    show(step.images, f"{step.num_tokens} tokens")  # 1, 2, 4, 8, 16 (previews), then 32 (final)
```

The prior samples with transformers' `generate()`, which hands every new id to a `streamer`. [`stream_prior`] runs
`generate()` in a worker thread with a [`PreviewStreamer`]: at each preview budget the streamer passes the ids so far to
the calling thread and *waits* until the caller asks for the next one, so the prior and the preview decodes never run at
the same time. The worker saves the global RNG state before each hand-off and restores it afterwards, so whatever the
caller does meanwhile (decoding, drawing noise) does not change what the prior samples: with the same `generator`, the
streamed ids and final images equal those of a call without streaming. Closing the iterator early stops the prior.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch
from transformers.generation.streamers import BaseStreamer


class GenerationCancelled(Exception):
    """Raised inside the prior's `generate()` when the consumer of a stream stopped iterating."""


def preview_budgets(num_tokens: int) -> list[int]:
    """The powers of two below `num_tokens` (1, 2, 4, ...): where previews are decoded."""
    budgets, k = [], 1
    while k < num_tokens:
        budgets.append(k)
        k *= 2
    return budgets


def _rng_states() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states: tuple) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class PreviewStreamer(BaseStreamer):
    """A `generate()` streamer (runs in the generation thread) that hands the ids generated so far `[B, n]` to the
    consumer when `n` is one of `budgets` (and once at the start, after the prefix), then blocks until the consumer
    resumes it (`resume()`) or cancels (`cancel()`: `put` raises [`GenerationCancelled`])."""

    def __init__(self, budgets: list[int]):
        self.budgets = set(budgets)
        self.events: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._columns: list[torch.Tensor] = []
        self._started = False

    def put(self, value: torch.Tensor):
        if not self._started:  # the prefix (condition tokens): generation has begun
            self._started = True
            self._hand_off("start", None)
            return
        self._columns.append(value.reshape(-1, 1).cpu())
        if len(self._columns) in self.budgets:
            self._hand_off("ids", torch.cat(self._columns, dim=1))

    def end(self):
        pass

    def _hand_off(self, kind: str, payload) -> None:
        states = _rng_states()
        self.events.put((kind, payload))
        reply = self._replies.get()
        _set_rng_states(states)
        if reply == "stop":
            raise GenerationCancelled()

    def resume(self) -> None:
        self._replies.put("go")

    def cancel(self) -> None:
        self._replies.put("stop")


def stream_prior(generate: Callable[[BaseStreamer], torch.Tensor], budgets: list[int]) -> Iterator[tuple[str, object]]:
    """Runs `generate(streamer)` (the prior's sampling, returning ids `[B, N]`) in a worker thread and yields
    `("start", None)` once sampling has begun, `("ids", ids [B, n])` for each n in `budgets`, and `("done", ids
    [B, N])` at the end. The worker is paused while the caller handles an item; closing the iterator stops it."""
    streamer = PreviewStreamer(budgets)
    outcome: dict = {}

    def work():
        try:
            with torch.no_grad():
                outcome["ids"] = generate(streamer)
        except BaseException as error:  # handed to the consumer (re-raised there)
            outcome["error"] = error
        finally:
            streamer.events.put(("end", None))

    worker = threading.Thread(target=work, name="flextok-prior-stream", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            kind, payload = streamer.events.get()
            if kind == "end":
                finished = True
                break
            yield kind, payload
            streamer.resume()
    finally:
        if not finished:  # the consumer stopped early (or failed): stop the prior and wait for it
            streamer.cancel()
            while streamer.events.get()[0] != "end":
                streamer.cancel()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    yield "done", outcome["ids"]


__all__ = ["GenerationCancelled", "PreviewStreamer", "preview_budgets", "stream_prior"]
