"""The checks of the frozen settings dataclasses (models and training recipes).

Each raises ``ValueError`` naming the settings as a recipe writes them; the registries and
the recipe loader turn it into an :class:`~wsistore.errors.InputError` that says where.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import ClassVar

#: Upscaling factors every generator supports.
SCALES = (2, 4, 8)


def at_least(settings: object, **minimums: float) -> None:
    """Refuse ``settings`` when one of these is below its minimum: ``at_least(self, blocks=1)``."""
    if any(getattr(settings, name) < least for name, least in minimums.items()):
        rules = [f"{name} >= {least}" for name, least in minimums.items()]
        listing = ", ".join(rules[:-1]) + " and " + rules[-1] if len(rules) > 1 else rules[0]
        raise ValueError(f"need {listing}")


def one_of(setting: str, value: object, choices: Collection[object]) -> None:
    """Refuse a ``value`` of ``setting`` that is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {', '.join(map(str, choices))}, got {value!r}")


class GeneratorSettings:
    """Base of the generators' settings dataclasses: ``scale`` is one of :data:`SCALES`, and
    each setting named in :attr:`minimums` is at least its minimum."""

    minimums: ClassVar[Mapping[str, int]] = {}
    scale: int

    def __post_init__(self) -> None:
        at_least(self, **self.minimums)
        one_of("scale", self.scale, SCALES)
