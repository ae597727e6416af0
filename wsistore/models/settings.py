"""The checks of the frozen settings dataclasses (models and training recipes).

Each raises ``ValueError`` naming the settings as a recipe writes them; the registries and
the recipe loader turn it into an :class:`~wsistore.errors.InputError` that says where.
"""

from __future__ import annotations

from collections.abc import Collection

#: Upscaling factors every generator supports.
SCALES = (2, 4, 8)


def at_least(settings: object, **minimums: float) -> None:
    """Refuse ``settings`` when one of these is below its minimum: ``at_least(self, blocks=1)``."""
    if any(getattr(settings, name) < least for name, least in minimums.items()):
        rules = [f"{name} >= {least}" for name, least in minimums.items()]
        raise ValueError(f"need {rules[0] if len(rules) == 1 else ', '.join(rules[:-1]) + ' and ' + rules[-1]}")


def one_of(setting: str, value: object, choices: Collection[object]) -> None:
    """Refuse a ``value`` of ``setting`` that is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_generator(settings: object, **minimums: float) -> None:
    """A generator's settings: these counts at least their minimums, ``scale`` one of :data:`SCALES`."""
    at_least(settings, **minimums)
    one_of("scale", getattr(settings, "scale"), SCALES)
