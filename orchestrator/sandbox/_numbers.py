"""Deterministic ids and phone numbers from the seed."""

from __future__ import annotations

import random
import uuid


class IdSource:
    def __init__(self, *, seed: int, number_prefix: str) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - seeded, reproducible ids
        self._prefix = number_prefix
        self._digits = 12 - (len(number_prefix) - 1)  # E.164 numbers of 12 digits in total
        self.taken: set[str] = set()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def token(self, prefix: str, nbytes: int = 8) -> str:
        return f"{prefix}_{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def msisdn(self) -> str:
        """A number from the pool nobody holds yet."""
        while True:
            number = self._prefix + f"{self._rng.randrange(10**self._digits):0{self._digits}d}"
            if number not in self.taken:
                self.taken.add(number)
                return number

    def release(self, number: str) -> None:
        self.taken.discard(number)
