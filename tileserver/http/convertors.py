"""Path convertors of the routes: ``{name:int}`` takes at most nine digits, so a path with
more is simply not found (404), never a 500 from ``int()`` on thousands of digits (Python
refuses to convert more than 4,300)."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class BoundedIntConvertor(Convertor[int]):
    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        if not 0 <= value < 10**9:
            raise ValueError("path integers are 0 to 999,999,999")
        return str(value)


def install() -> None:
    """Replace Starlette's ``int`` convertor; before any ``Route`` with one is made."""
    register_url_convertor("int", BoundedIntConvertor())


# Route modules with ``{name:int}`` import this module first (the early path does not).
install()
